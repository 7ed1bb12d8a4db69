"""How long deleted data and abandoned uploads are kept before garbage collection frees them:
the defaults the SDK, the CLI, the REST API and the collector share."""

from __future__ import annotations

DAY_MS = 86_400_000
PURGE_AFTER_MS = 30 * DAY_MS
"""Deleted runs and experiments are purged once deleted this long (``older_than``)."""
ABANDONED_AFTER_MS = DAY_MS
"""Leases, upload sessions and temp files idle this long belong to uploads that died."""
