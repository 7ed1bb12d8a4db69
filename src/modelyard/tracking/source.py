"""Capture the source state and environment of a training run at run start.

Best effort throughout: no git binary, no repository, a detached HEAD, a hanging git or
unreadable package metadata never raise; the affected fields fall back to ``None``.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import importlib.metadata
import os
import platform
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from subprocess import DEVNULL, PIPE

__all__ = ["RecentCaptures", "SourceCapture", "capture_source"]

TAG_PREFIX = "modelyard."
DIFF_ARTIFACT = "modelyard/source/diff.patch"
REQUIREMENTS_ARTIFACT = "modelyard/environment/requirements.txt"
MAX_TAG_VALUE_CHARS = 5000

_DIFF_LIMIT_BYTES = 5 * 1024 * 1024
_SMALL_OUTPUT_LIMIT = 64 * 1024
# Repository-locating variables (set e.g. inside git hooks) would override ``-C cwd``.
_GIT_LOCATION_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR")
# Changes *inside* submodules would need a git process per submodule: too slow at run start.
_IGNORE_SUBMODULES = "--ignore-submodules=dirty"
_NO_ENTRY_POINT = frozenset({"", "-", "-c", "-m"})


@dataclass(frozen=True, slots=True)
class SourceCapture:
    git_commit: str | None
    git_branch: str | None
    git_remote: str | None
    git_dirty: bool | None
    git_diff: str | None
    entry_point: str | None
    python_version: str
    packages: tuple[str, ...]
    hostname: str
    user: str

    def tags(self) -> dict[str, str]:
        """System tags (all keys carry the reserved ``modelyard.`` prefix)."""
        dirty = None if self.git_dirty is None else ("true" if self.git_dirty else "false")
        candidates: dict[str, str | None] = {
            "source.git_commit": self.git_commit,
            "source.git_branch": self.git_branch,
            "source.git_remote": self.git_remote,
            "source.git_dirty": dirty,
            "source.entry_point": self.entry_point,
            "python_version": self.python_version,
            "hostname": self.hostname,
            "user": self.user,
        }
        return {
            TAG_PREFIX + key: value[:MAX_TAG_VALUE_CHARS]
            for key, value in candidates.items()
            if value is not None
        }

    def artifacts(self) -> dict[str, bytes]:
        """Files to upload with the run: the uncommitted diff and the package list."""
        files: dict[str, bytes] = {}
        if self.git_diff:
            files[DIFF_ARTIFACT] = self.git_diff.encode("utf-8")
        files[REQUIREMENTS_ARTIFACT] = "".join(f"{p}\n" for p in self.packages).encode("utf-8")
        return files


def capture_source(*, argv0: str | None, cwd: Path, timeout_s: float = 5.0) -> SourceCapture:
    """Snapshot git state, entry point and environment; never raises on environment issues.

    ``timeout_s`` is the total budget for all git invocations (at most four).
    """
    deadline = time.monotonic() + max(timeout_s, 0.0)
    commit = branch = remote = diff = None
    dirty: bool | None = None
    root = _repo_root(cwd, deadline)
    if root is not None:
        commit, branch, dirty = _status(cwd, deadline)
        remote = _remote(cwd, deadline)
        if dirty:
            diff = _diff(cwd, deadline)
    return SourceCapture(
        git_commit=commit,
        git_branch=branch,
        git_remote=remote,
        git_dirty=dirty,
        git_diff=diff,
        entry_point=_entry_point(argv0, cwd, root),
        python_version=platform.python_version(),
        packages=_installed_packages(),
        hostname=_hostname(),
        user=_user(),
    )


class RecentCaptures:
    """Captures reused for ``max_age_s`` seconds per (entry point, working directory).

    A process that starts many runs (a sweep) runs the code it loaded once, so capturing git
    state and packages again for each run (four git processes, ~30 ms) would record nothing
    new; a capture older than ``max_age_s`` is taken again, so a long-lived process (a
    notebook) sees edits made since.
    """

    def __init__(self, *, max_age_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._taken: dict[tuple[str | None, str], tuple[float, SourceCapture]] = {}

    def recent(self, *, argv0: str | None, cwd: Path) -> SourceCapture | None:
        """The capture of this entry point and folder if it is recent enough, else None."""
        with self._lock:
            found = self._taken.get((argv0, str(cwd)))
        if found is None or self._clock() - found[0] > self._max_age_s:
            return None
        return found[1]

    def capture(self, *, argv0: str | None, cwd: Path) -> SourceCapture:
        """A recent capture, or a new one (:func:`capture_source`), remembered."""
        found = self.recent(argv0=argv0, cwd=cwd)
        if found is not None:
            return found
        taken = capture_source(argv0=argv0, cwd=cwd)
        with self._lock:
            self._taken[(argv0, str(cwd))] = (self._clock(), taken)
        return taken


def _git(
    cwd: Path, deadline: float, *args: str, limit: int = _SMALL_OUTPUT_LIMIT
) -> tuple[bytes, bool] | None:
    """Run git; return (stdout capped at ``limit`` bytes, truncated) or None on any failure."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_VARS}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", GIT_OPTIONAL_LOCKS="0")
    cmd = ["git", "-C", str(cwd), "-c", "core.fsmonitor=false", "--no-pager", *args]
    try:
        proc = subprocess.Popen(cmd, stdin=DEVNULL, stdout=PIPE, stderr=DEVNULL, env=env)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    # A kill by the timer (or by us, once ``limit`` is exceeded) shows up as a non-zero exit.
    timer = threading.Timer(remaining, proc.kill)
    timer.start()
    data: bytes | None = None
    with contextlib.suppress(OSError):
        data = proc.stdout.read(limit + 1) if proc.stdout is not None else b""
    truncated = data is not None and len(data) > limit
    if data is None or truncated:
        proc.kill()
    code = proc.wait()
    timer.cancel()
    if proc.stdout is not None:
        proc.stdout.close()
    if data is None or (code != 0 and not truncated):
        return None
    return data[:limit], truncated


def _repo_root(cwd: Path, deadline: float) -> Path | None:
    result = _git(cwd, deadline, "rev-parse", "--show-toplevel")
    top = os.fsdecode(result[0]).strip() if result and not result[1] else ""
    return Path(top) if top else None


def _status(cwd: Path, deadline: float) -> tuple[str | None, str | None, bool | None]:
    """Commit, branch (None when detached) and dirtiness (tracked files only)."""
    args = ("--porcelain=v2", "--branch", "--no-ahead-behind", "--untracked-files=no", "-z")
    result = _git(cwd, deadline, "status", *args, _IGNORE_SUBMODULES)
    if result is None:
        return None, None, None
    commit: str | None = None
    branch: str | None = None
    dirty = False
    for record in result[0].decode("utf-8", "replace").split("\0"):
        if record.startswith("# branch.oid "):
            oid = record.removeprefix("# branch.oid ").strip()
            commit = oid if re.fullmatch(r"[0-9a-f]{40,64}", oid) else None
        elif record.startswith("# branch.head "):
            head = record.removeprefix("# branch.head ").strip()
            branch = None if head in ("", "(detached)") else head
        elif record and not record.startswith("#"):
            dirty = True
            break
    return commit, branch, dirty


def _remote(cwd: Path, deadline: float) -> str | None:
    result = _git(cwd, deadline, "config", "-z", "--get-regexp", r"^remote\..+\.url$")
    if result is None:
        return None
    urls: dict[str, str] = {}
    for record in result[0].decode("utf-8", "replace").split("\0"):
        key, _, url = record.partition("\n")
        name = key.removeprefix("remote.").removesuffix(".url")
        if url and name not in urls:
            urls[name] = url
    if not urls:
        return None
    return strip_credentials(urls.get("origin", next(iter(urls.values()))))


def strip_credentials(url: str) -> str:
    """Drop ``user:password@`` (and, for http(s), a bare token user) from a remote URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url  # scp-like "git@host:path" or a local path: no secret possible
    end = min((i for i in (rest.find(c) for c in "/?#") if i != -1), default=len(rest))
    userinfo, at, host = rest[:end].rpartition("@")
    if not at:
        return url
    keep_user = ":" not in userinfo and scheme.lower() not in ("http", "https")
    return f"{scheme}://{userinfo + '@' if keep_user else ''}{host}{rest[end:]}"


def _diff(cwd: Path, deadline: float) -> str | None:
    limit = _DIFF_LIMIT_BYTES
    args = ("HEAD", "--no-color", "--no-ext-diff", "--no-textconv", _IGNORE_SUBMODULES)
    result = _git(cwd, deadline, "diff", *args, limit=limit)
    if result is None or not result[0]:
        return None
    raw, truncated = result
    text = raw.decode("utf-8", "replace")
    encoded = text.encode("utf-8")
    if not truncated and len(encoded) <= limit:
        return text
    marker = f"# modelyard: diff truncated (limit {limit} bytes)\n"
    kept = encoded[: max(limit - len(marker) - 1, 0)]
    newline = kept.rfind(b"\n")
    kept = kept[: newline + 1] if newline != -1 else kept + b"\n"
    return kept.decode("utf-8", "ignore") + marker


def _entry_point(argv0: str | None, cwd: Path, root: Path | None) -> str | None:
    if argv0 is None or argv0 in _NO_ENTRY_POINT:
        return None
    if root is None:
        return argv0
    try:
        script = (cwd / argv0).resolve()
        return script.relative_to(root.resolve()).as_posix()
    except (OSError, RuntimeError, ValueError):
        return argv0


@functools.lru_cache(maxsize=1)
def _installed_packages() -> tuple[str, ...]:
    # Scanned once per process: a training process rarely installs packages while it runs, and
    # the scan is the most expensive part of a capture.
    seen: dict[str, str] = {}
    try:
        dists = list(importlib.metadata.distributions())
    except Exception:
        return ()
    for dist in dists:
        entry = _name_version(dist)
        if entry is None:
            continue
        key = re.sub(r"[-_.]+", "-", entry[0]).lower()
        seen.setdefault(key, f"{entry[0]}=={entry[1]}")  # first on sys.path wins
    return tuple(sorted(seen.values(), key=lambda s: (s.lower(), s)))


def _name_version(dist: importlib.metadata.Distribution) -> tuple[str, str] | None:
    """Read Name/Version from the metadata headers (much faster than the email parser)."""
    fields: dict[str, str] = {}
    try:
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    except Exception:  # the same files Distribution.metadata would read
        return None
    for line in text.splitlines():
        if not line.strip():
            break  # end of the header block
        key, sep, value = line.partition(":")
        if sep and key.lower() in ("name", "version"):
            fields.setdefault(key.lower(), value.strip())
    name, version = fields.get("name", ""), fields.get("version", "")
    return (name, version) if name and version else None


def _hostname() -> str:
    with contextlib.suppress(OSError):
        return socket.gethostname() or platform.node() or "unknown"
    return platform.node() or "unknown"


def _user() -> str:
    try:
        return getpass.getuser() or "unknown"
    except Exception:  # OSError/KeyError/ImportError depending on platform and version
        return "unknown"
