"""Whether the data folders modelyard uses are private to the user who runs it.

modelyard creates its folders 0700 and its files 0600 (``stores.sql.engine``,
``artifacts.blobs``), but it never narrows the mode of a folder that already exists: an
older install, or an operator's choice. :func:`permission_warnings` says when such a folder
lets other users of the host in, so that the server can tell at start.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from modelyard.artifacts.blobs import local_root
from modelyard.settings import Settings
from modelyard.stores.sql.engine import sqlite_file

OPEN_BITS = 0o077  # any access for the group or for others


def permission_warnings(settings: Settings) -> list[str]:
    """One warning per local store of ``settings`` that its group or other users may read:
    the SQLite database file, and the artifact store's root folder (the blobs in it are
    private, but an open root lets others see, and in an older install read, what it holds).
    Remote stores (PostgreSQL, ``s3://``...) and what does not exist yet are not checked.
    Empty when all is private (or on Windows, which has no such modes)."""
    if os.name != "posix":
        return []
    checks: list[tuple[str, Path, bool]] = []
    db = sqlite_file(settings.db_url)
    if db is not None:
        checks.append(("database file", db.absolute(), False))
    root = local_root(settings.artifacts_url)
    if root is not None:
        checks.append(("artifact store", Path(root), True))
    warnings: list[str] = []
    for what, path, folder in checks:
        try:
            st = path.stat()
        except OSError:
            continue  # not created yet: it will be, private
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode) == folder and mode & OPEN_BITS:
            private = "700" if folder else "600"
            warnings.append(
                f"the {what} {path} is open to other users of this host (mode "
                f"{mode:04o}): they may read the models and data it holds; "
                f"'chmod {private} {path}' makes it private (modelyard leaves the mode of "
                "what already exists alone)")
    return warnings
