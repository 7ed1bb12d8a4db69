"""Identifiers and human-readable run names."""

from __future__ import annotations

import secrets
import uuid

_ADJECTIVES = (
    "amber", "bold", "brisk", "calm", "clever", "crisp", "daring", "eager", "fair", "fleet",
    "gentle", "glad", "grand", "happy", "hardy", "keen", "kind", "lively", "lucid", "merry",
    "mighty", "nimble", "noble", "polite", "proud", "quick", "quiet", "rapid", "sharp", "shy",
    "silent", "sleek", "smooth", "solid", "steady", "sunny", "swift", "tidy", "vivid", "witty",
)
_NOUNS = (
    "badger", "bear", "bison", "crane", "deer", "dove", "eagle", "falcon", "ferret", "finch",
    "fox", "gecko", "goose", "hare", "hawk", "heron", "ibis", "koala", "lark", "lemur", "lynx",
    "mole", "moose", "newt", "otter", "owl", "panda", "puffin", "quail", "raven", "robin",
    "seal", "shrike", "sloth", "stoat", "swan", "tapir", "trout", "wolf", "wren",
)


def new_run_id() -> str:
    """A random 32-hex run id."""
    return uuid.uuid4().hex


def new_run_name() -> str:
    """A readable name such as ``swift-otter-417``."""
    adjective = secrets.choice(_ADJECTIVES)
    noun = secrets.choice(_NOUNS)
    return f"{adjective}-{noun}-{secrets.randbelow(1000):03d}"
