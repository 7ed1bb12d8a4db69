"""The import contracts of pyproject.toml bind: each kind of violation, put into a copy of the
package, makes ``lint-imports`` fail naming the broken contract; the copy as it is passes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

# (file in the copy of modelyard, the line added to it, the contract it breaks)
VIOLATIONS = [
    ("registry/__init__.py", "import modelyard.server.app", "Layers, top to bottom"),
    ("tracking/reach_up.py", "import modelyard.backend.remote", "Layers, top to bottom"),
    ("newthing/__init__.py", "", "Layers, top to bottom"),  # a package in no layer
    ("domain/orm.py", "import sqlalchemy", "The domain and the errors know no framework"),
    ("domain/web.py", "import fastapi", "The domain and the errors know no framework"),
    ("errors_helper_is_not_allowed.py", "", "Layers, top to bottom"),
    ("tracking/asgi.py", "import starlette.requests", "Only the server speaks ASGI"),
    ("wire/asgi.py", "import fastapi", "Only the server speaks ASGI"),
    ("client/asgi.py", "import uvicorn", "Only the server speaks ASGI"),
    ("stores/asgi.py", "from starlette import status", "Only the server speaks ASGI"),
    ("serving/endpoint.py", "import modelyard.stores.sql", "Serving runs models"),
    ("serving/app.py", "import modelyard.server.app", "Serving runs models"),
    ("server/routes/shortcut.py", "import modelyard.stores.sql",
     "Server routes reach the stores only through the services"),
]


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "src" / "modelyard", tmp_path / "src" / "modelyard",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(copy: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(copy / "src"), "COLUMNS": "400"}
    return subprocess.run([str(LINT), "--no-cache", "--no-logo", str(copy / "pyproject.toml")],
                          cwd=copy, env=env, capture_output=True, text=True, timeout=120)


def test_the_copy_as_it_is_passes(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    result = _lint(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout and result.stdout.count(" KEPT") >= 5
    # It linted the copy, not the installed package.
    assert str(copy) in subprocess.run(
        [sys.executable, "-c", "import modelyard; print(modelyard.__file__)"],
        env={**os.environ, "PYTHONPATH": str(copy / "src")}, capture_output=True, text=True,
    ).stdout


@pytest.mark.parametrize(("where", "line", "contract"), VIOLATIONS,
                         ids=[v[0] for v in VIOLATIONS])
def test_each_kind_of_violation_fails_lint(tmp_path: Path, where: str, line: str,
                                           contract: str) -> None:
    copy = _copy(tmp_path)
    target = copy / "src" / "modelyard" / where
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.parent != copy / "src" / "modelyard" and \
            not (target.parent / "__init__.py").exists():
        (target.parent / "__init__.py").write_text("")
    with target.open("a") as f:
        f.write(f"\n{line}\n")
    result = _lint(copy)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    verdicts = [x for x in output.splitlines() if x.endswith((" KEPT", " BROKEN"))]
    broken = [x for x in verdicts if x.endswith(" BROKEN")]
    if where.startswith(("newthing", "errors_helper")):  # exhaustive: in no layer
        assert f"modelyard.{where.split('/')[0].removesuffix('.py')}" in output, output
    assert len(verdicts) >= 5, output
    assert [x for x in broken if x.startswith(contract)], output
