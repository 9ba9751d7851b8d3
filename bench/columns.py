"""The names of the table's columns, shared by the systems that fill them and the targets that
compare them."""

CURL = "curl (nginx)"
LOCAL = "local disk"
AFS = "artifactfs"
AFS_NO_XATTRS = "artifactfs no-xattrs"
BARE = "bare pyfuse3"
BARE_ENOSYS = "bare pyfuse3 ENOSYS"
BARE_CACHED = "bare pyfuse3 + cache"
RCLONE_FULL = "rclone full"
RCLONE_OFF = "rclone off"
HTTPDIRFS_CACHE = "httpdirfs cache"
HTTPDIRFS_NO_CACHE = "httpdirfs no-cache"
API = "API alone"
AFS_FSSPEC = "artifactfs-fsspec"
FSSPEC_HTTP = "fsspec http"
FSSPEC_BARE = "bare trio fsspec"
FSSPEC_BARE_CACHED = "bare trio fsspec + cache"
FSSPEC_BARE_WORK = "bare trio fsspec, listed + disk cache"

RCLONES = (RCLONE_FULL, RCLONE_OFF)
ANCHORS = (*RCLONES, HTTPDIRFS_CACHE, HTTPDIRFS_NO_CACHE)
