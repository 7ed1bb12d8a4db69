"""The suite's own layout: fixtures in ``conftest.py`` files, shared helpers in ``support``, and
no test module importing a conftest, another test module, or a helper kept anywhere else.

Importing ``conftest`` once broke collection (pytest may import a conftest twice, under two
names, and a second copy of a module means second copies of its globals). Every ``.py`` file
under ``tests/`` is read with :mod:`ast`, imports inside functions included.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SUPPORT = TESTS / "support"


def python_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def local_names() -> set[str]:
    """Every name a file or folder under ``tests/`` could be imported by, were its folder on
    ``sys.path`` (pytest puts ``tests/`` and the folders of rootless test modules there)."""
    names = set()
    for path in TESTS.rglob("*"):
        if "__pycache__" in path.parts:
            continue
        if path.is_dir():
            names.add(path.name)
        elif path.suffix == ".py":
            names.add(path.stem)
    return names


def imports(tree: ast.AST) -> Iterator[tuple[int, str, int]]:
    """(line, dotted module name, relative level) of every import in ``tree``, names imported
    from a module included (``from a import b`` gives ``a`` and ``a.b``), and of every
    ``importlib.import_module("...")`` / ``__import__("...")`` with a literal name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, 0
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            yield node.lineno, base, node.level
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}" if base else alias.name, node.level
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id == "__import__"))):
            yield node.lineno, node.args[0].value, 0


def problems_of(source: str, where: str, *, in_support: bool, local: set[str]) -> list[str]:
    """What is wrong with the imports of ``source`` (the file ``where``), one line each."""
    out = []
    for line, name, level in imports(ast.parse(source, filename=where)):
        parts = [p for p in name.split(".") if p]
        if level and not in_support:
            out.append(f"{where}:{line}: relative import {'.' * level}{name}: import helpers "
                       "from support")
        elif "conftest" in parts:
            out.append(f"{where}:{line}: imports {name}: a conftest holds fixtures, which "
                       "pytest hands to the tests; shared code goes in support")
        elif any(p.startswith("test_") for p in parts) and (level or parts[0] in local):
            out.append(f"{where}:{line}: imports the test module {name}: move what both "
                       "need into support (fixtures into a conftest.py)")
        elif not level and parts and parts[0] in local and parts[0] != "support":
            out.append(f"{where}:{line}: imports {name}, a helper outside support: move it "
                       "to tests/support")
    return out


def test_the_walk_sees_the_suite_and_the_rules_bite() -> None:
    files = python_files()
    assert SUPPORT / "__init__.py" in files
    assert Path(__file__).resolve() in files
    assert sum(p.name.startswith("test_") for p in files) > 50
    assert {"support", "conftest", "test_suite_layout", "cli"} <= local_names()
    bad = ("from conftest import CLIENT_HOOKS\n"
           "import test_store_contract as contract\n"
           "def f():\n"
           "    from cli.cli_support import Data\n"
           "import importlib\n"
           "importlib.import_module('conftest')\n"
           "from . import helpers\n"
           "from streaming.test_large_artifacts import PeakRss\n")
    found = problems_of(bad, "t.py", in_support=False,
                        local={"conftest", "test_store_contract", "cli", "streaming"})
    lines = sorted({int(p.split(":")[1]) for p in found})
    assert lines == [1, 2, 4, 6, 7, 8], found
    good = ("import os\nimport pytest\nfrom modelyard.settings import Settings\n"
            "from support.servers import ServerThread\nimport support.waiting\n")
    assert problems_of(good, "t.py", in_support=False, local={"support", "cli"}) == []


def test_no_module_imports_a_conftest_a_test_module_or_a_stray_helper() -> None:
    local = local_names()
    problems = [problem for path in python_files()
                for problem in problems_of(path.read_text(), str(path.relative_to(TESTS)),
                                           in_support=SUPPORT in path.parents, local=local)]
    assert not problems, "\n".join(problems)


def test_helpers_live_in_support() -> None:
    """Outside ``support``, a ``.py`` file is a test module, a conftest or a package marker."""
    stray = [str(p.relative_to(TESTS)) for p in python_files()
             if SUPPORT not in p.parents
             and not (p.name.startswith("test_") or p.name in ("conftest.py", "__init__.py"))]
    assert not stray, f"helpers outside tests/support: {stray}"
