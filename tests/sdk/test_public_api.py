"""``modelyard.__all__`` is exactly the public SDK: nothing missing, nothing extra."""

from __future__ import annotations

import inspect

import modelyard

# Dunder names that are part of the public API on purpose.
PUBLIC_DUNDERS = {"__version__"}


def public_members() -> set[str]:
    return {
        name
        for name in dir(modelyard)
        if not name.startswith("_") and not inspect.ismodule(getattr(modelyard, name))
    }


def test_all_lists_every_public_member() -> None:
    missing = public_members() - set(modelyard.__all__)
    assert missing == set(), f"public but not in __all__: {sorted(missing)}"


def test_all_lists_nothing_else() -> None:
    extra = set(modelyard.__all__) - public_members() - PUBLIC_DUNDERS
    assert extra == set(), f"in __all__ but not a public member: {sorted(extra)}"
    assert set(modelyard.__all__) >= PUBLIC_DUNDERS
    assert len(modelyard.__all__) == len(set(modelyard.__all__))  # no duplicates


def test_every_exported_name_resolves_to_modelyard_code() -> None:
    for name in modelyard.__all__:
        value = getattr(modelyard, name)
        if name in PUBLIC_DUNDERS:
            assert isinstance(value, str)
            continue
        assert getattr(value, "__module__", "").startswith("modelyard."), name


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from modelyard import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(modelyard.__all__)
