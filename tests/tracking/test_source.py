from __future__ import annotations

import getpass
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelyard.tracking import source
from modelyard.tracking.source import SourceCapture, capture_source, strip_credentials

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git binary not available")

CRED_URL = "https://bob:s3cret@example.invalid/x.git"
CLEAN_URL = "https://example.invalid/x.git"


def git(repo: Path, *args: str) -> str:
    cmd = ["git", "-C", str(repo), "-c", "user.name=Test", "-c", "user.email=t@example.invalid"]
    cmd += ["-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(var, None)
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "train.py").write_text("print('hello')\n")
    (root / "sub").mkdir()
    (root / "sub" / "job.py").write_text("x = 1\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    git(root, "remote", "add", "origin", CRED_URL)
    return root


def test_clean_repo(repo: Path) -> None:
    cap = capture_source(argv0="train.py", cwd=repo)
    assert cap.git_commit == git(repo, "rev-parse", "HEAD")
    assert cap.git_branch == "main"
    assert cap.git_remote == CLEAN_URL
    assert cap.git_dirty is False
    assert cap.git_diff is None
    assert cap.entry_point == "train.py"
    arts = cap.artifacts()
    assert set(arts) == {"modelyard/environment/requirements.txt"}
    assert all("s3cret" not in v and "bob" not in v for v in cap.tags().values())


def test_dirty_repo_has_diff(repo: Path) -> None:
    (repo / "train.py").write_text("print('changed line')\n")
    cap = capture_source(argv0="train.py", cwd=repo)
    assert cap.git_dirty is True
    assert cap.git_diff is not None
    assert "+print('changed line')" in cap.git_diff
    assert "-print('hello')" in cap.git_diff
    patch = cap.artifacts()["modelyard/source/diff.patch"]
    assert patch.decode() == cap.git_diff
    assert cap.tags()["modelyard.source.git_dirty"] == "true"


def test_staged_new_file_is_dirty_untracked_is_not(repo: Path) -> None:
    (repo / "scratch.txt").write_text("untracked\n")
    assert capture_source(argv0=None, cwd=repo).git_dirty is False
    (repo / "new.py").write_text("y = 2\n")
    git(repo, "add", "new.py")
    cap = capture_source(argv0=None, cwd=repo)
    assert cap.git_dirty is True
    assert cap.git_diff is not None and "+y = 2" in cap.git_diff
    assert "untracked" not in cap.git_diff


def test_diff_is_truncated_with_marker(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source, "_DIFF_LIMIT_BYTES", 2000)
    (repo / "train.py").write_text("".join(f"line {i} é\n" for i in range(2000)))
    cap = capture_source(argv0=None, cwd=repo)
    assert cap.git_diff is not None
    assert len(cap.git_diff.encode()) <= 2000
    assert cap.git_diff.endswith("# modelyard: diff truncated (limit 2000 bytes)\n")
    assert cap.git_diff.startswith("diff --git a/train.py b/train.py\n")


def test_not_a_repo(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    cap = capture_source(argv0="run.py", cwd=plain)
    assert (cap.git_commit, cap.git_branch, cap.git_remote) == (None, None, None)
    assert cap.git_dirty is None
    assert cap.git_diff is None
    assert cap.entry_point == "run.py"
    tags = cap.tags()
    assert not any(k.startswith("modelyard.source.git") for k in tags)
    assert "modelyard/source/diff.patch" not in cap.artifacts()


def test_missing_cwd_and_bare_repo(tmp_path: Path) -> None:
    assert capture_source(argv0=None, cwd=tmp_path / "does-not-exist").git_dirty is None
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    cap = capture_source(argv0=None, cwd=bare)
    assert cap.git_commit is None and cap.git_dirty is None


def test_detached_head(repo: Path) -> None:
    git(repo, "checkout", "-q", "--detach")
    cap = capture_source(argv0=None, cwd=repo)
    assert cap.git_branch is None
    assert cap.git_commit == git(repo, "rev-parse", "HEAD")
    assert "modelyard.source.git_branch" not in cap.tags()
    assert cap.tags()["modelyard.source.git_commit"] == cap.git_commit


def test_unborn_branch(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    cap = capture_source(argv0=None, cwd=tmp_path)
    assert cap.git_commit is None
    assert cap.git_branch == "main"


def test_first_remote_when_no_origin(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    git(tmp_path, "remote", "add", "upstream", "git@example.invalid:team/x.git")
    assert capture_source(argv0=None, cwd=tmp_path).git_remote == "git@example.invalid:team/x.git"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (CRED_URL, CLEAN_URL),
        ("https://ghp_token@example.invalid/x.git", CLEAN_URL),
        ("https://example.invalid/x.git", CLEAN_URL),
        ("http://u:p@a@host:8080/p?q=1", "http://host:8080/p?q=1"),
        ("ssh://git@example.invalid/x.git", "ssh://git@example.invalid/x.git"),
        ("ssh://git:pw@example.invalid/x.git", "ssh://example.invalid/x.git"),
        ("git@example.invalid:x.git", "git@example.invalid:x.git"),
        ("/srv/git/x.git", "/srv/git/x.git"),
    ],
)
def test_strip_credentials(url: str, expected: str) -> None:
    assert strip_credentials(url) == expected


def test_entry_point_relative_to_repo_root(repo: Path, tmp_path: Path) -> None:
    sub = repo / "sub"
    assert capture_source(argv0="job.py", cwd=sub).entry_point == "sub/job.py"
    assert capture_source(argv0=str(sub / "job.py"), cwd=repo).entry_point == "sub/job.py"
    assert capture_source(argv0="../train.py", cwd=sub).entry_point == "train.py"
    outside = str(tmp_path / "elsewhere.py")
    assert capture_source(argv0=outside, cwd=repo).entry_point == outside
    for interactive in (None, "", "-c", "-m"):
        assert capture_source(argv0=interactive, cwd=repo).entry_point is None


def test_packages_and_environment(tmp_path: Path) -> None:
    cap = capture_source(argv0=None, cwd=tmp_path)
    assert f"pytest=={importlib.metadata.version('pytest')}" in cap.packages
    assert list(cap.packages) == sorted(cap.packages, key=lambda s: (s.lower(), s))
    names = [p.split("==")[0].lower().replace("_", "-") for p in cap.packages]
    assert len(names) == len(set(names))
    reqs = cap.artifacts()["modelyard/environment/requirements.txt"].decode()
    assert reqs.splitlines() == list(cap.packages)
    assert cap.python_version == platform.python_version()
    assert cap.hostname and cap.user


def test_tags_prefixed_and_capped(repo: Path) -> None:
    long_argv = "x" * 6000 + ".py"
    tags = capture_source(argv0=long_argv, cwd=repo.parent).tags()
    assert tags and all(k.startswith("modelyard.") for k in tags)
    assert len(tags["modelyard.source.entry_point"]) == 5000
    full = capture_source(argv0="train.py", cwd=repo).tags()
    assert set(full) == {
        "modelyard.source.git_commit",
        "modelyard.source.git_branch",
        "modelyard.source.git_remote",
        "modelyard.source.git_dirty",
        "modelyard.source.entry_point",
        "modelyard.python_version",
        "modelyard.hostname",
        "modelyard.user",
    }


def test_user_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def boom() -> str:
        raise OSError("no user")

    monkeypatch.setattr(getpass, "getuser", boom)
    assert capture_source(argv0=None, cwd=tmp_path).user == "unknown"


def test_no_git_binary(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    cap = capture_source(argv0="train.py", cwd=repo)
    assert (cap.git_commit, cap.git_dirty, cap.git_remote) == (None, None, None)
    assert cap.entry_point == "train.py"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell script as fake git")
def test_hanging_git_times_out(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    fake_git = fake_bin / "git"
    fake_git.write_text(f"#!/bin/sh\nexec {sleep} 30\n")
    fake_git.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake_bin))
    start = time.monotonic()
    cap = capture_source(argv0="train.py", cwd=repo, timeout_s=0.3)
    assert time.monotonic() - start < 3.0
    assert cap.git_commit is None and cap.git_dirty is None


def test_env_and_git_invocations(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], dict[str, str]]] = []
    real_popen = subprocess.Popen

    def spy(cmd: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        env = kwargs.get("env")
        assert isinstance(env, dict)
        calls.append((cmd, env))
        return real_popen(cmd, **kwargs)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setenv("GIT_DIR", str(repo / "nowhere"))
    monkeypatch.setattr(subprocess, "Popen", spy)
    (repo / "train.py").write_text("print('dirty')\n")
    cap = capture_source(argv0=None, cwd=repo)
    assert cap.git_dirty is True and cap.git_remote == CLEAN_URL
    assert 1 <= len(calls) <= 4
    for cmd, env in calls:
        assert cmd[:3] == ["git", "-C", str(repo)]
        assert env["GIT_TERMINAL_PROMPT"] == "0" and env["LC_ALL"] == "C"
        assert "GIT_DIR" not in env


def test_a_changed_file_makes_the_capture_dirty(repo: Path) -> None:
    # What a capture costs is measured in bench/, not here: the row "(c) run creation over
    # HTTP, source capture on" of `make bench` (no timing assertions in tests).
    (repo / "train.py").write_text("print('dirty')\n")
    cap = capture_source(argv0="train.py", cwd=repo)
    assert cap.git_dirty is True


def test_capture_is_frozen(tmp_path: Path) -> None:
    cap = capture_source(argv0=None, cwd=tmp_path)
    assert isinstance(cap, SourceCapture)
    with pytest.raises(AttributeError):
        cap.user = "mallory"  # type: ignore[misc]
