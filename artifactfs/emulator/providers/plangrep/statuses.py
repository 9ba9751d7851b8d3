"""The 11 job statuses of the docs, and which of them mean what."""

ACTIVE = ("provisioning", "awaiting_uploads", "uploading", "preflighting", "blocked_insufficient_credits", "processing")
TERMINAL = ("completed", "completed_with_errors", "failed", "cancelled", "expired")
STATUSES = ACTIVE + TERMINAL
WITH_RESULT = ("completed", "completed_with_errors")
FINISHED = (*WITH_RESULT, "failed")  # processing ended: completedAt is stamped
PAGES_KNOWN = ("blocked_insufficient_credits", "processing", *WITH_RESULT)  # preflight has counted the pages
OLD_NAMES = {"queued": "provisioning", "running": "processing"}  # the emulator's earlier statuses
