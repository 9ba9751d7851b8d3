"""mount.fuse.artifactfs: mount(8)'s helper arguments and fstab options → ``artifactfs mount``."""

from __future__ import annotations

import pytest

from artifactfs.mounthelper import OptionError, mount_argv, translate_options


def test_artifactfs_options_become_flags() -> None:
    assert translate_options("config=/etc/artifactfs/config.toml,allow_other,listing_ttl=30,"
                             "cache_dir=/var/cache/a,cache_size=1GiB,log_file=/var/log/a.log,log_level=debug") == [
        "--config", "/etc/artifactfs/config.toml", "--allow-other", "--listing-ttl", "30",
        "--cache-dir", "/var/cache/a", "--cache-size", "1GiB", "--log-file", "/var/log/a.log",
        "--log-level", "debug"]


def test_generic_mount_options_are_ignored() -> None:
    generic = "rw,ro,nodev,nosuid,noexec,_netdev,noauto,user,users,nofail,defaults,relatime,x-systemd.automount," \
              "x-systemd.requires=network-online.target,comment=x"
    assert translate_options(generic) == []


@pytest.mark.parametrize("options", ["bogus", "config", "config=", "allow_other=1", "uid=1000"])
def test_unknown_or_malformed_options_are_refused(options: str) -> None:
    with pytest.raises(OptionError, match="unknown option"):
        translate_options(options)


def test_mount8_arguments() -> None:
    assert mount_argv(["artifactfs", "/mnt/a", "-o", "rw,config=/c.toml,_netdev"]) == [
        "mount", "/mnt/a", "--config", "/c.toml"]
    assert mount_argv(["-n", "artifactfs", "/mnt/a", "-oallow_other", "-v"]) == ["mount", "/mnt/a", "--allow-other"]
    assert mount_argv(["artifactfs", "/mnt/a", "-f", "-o", "config=/c.toml"]) is None, "-f is mount(8)'s fake mode"
    with pytest.raises(OptionError, match="usage"):
        mount_argv(["/mnt/a"])
    with pytest.raises(OptionError, match="unknown argument"):
        mount_argv(["artifactfs", "/mnt/a", "--foreground"])
