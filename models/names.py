"""Validation of names that end up in paths: models, versions, aliases."""

from __future__ import annotations

import re

from statecast.models.errors import InvalidName

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(value: str, what: str = "name") -> str:
    """Return ``value`` if it is a safe name, else raise :class:`InvalidName`."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value) or value in {".", ".."}:
        raise InvalidName(
            f"invalid {what} {value!r}: use 1-128 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit")
    return value


def split_reference(reference: str) -> tuple[str, str | None]:
    """Split ``"name"`` or ``"name@version_or_alias"`` into its validated parts."""
    name, _, tag = reference.partition("@")
    check_name(name, "model name")
    if tag:
        check_name(tag, "version or alias")
        return name, tag
    return name, None
