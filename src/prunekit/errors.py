"""Errors raised for bad user input; the CLI turns them into one-line messages with exit code 2."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

E = TypeVar("E", bound=StrEnum)


class PrunekitError(ValueError):
    """A problem with what the user asked for (bad path, bad value, bad data): not a bug."""


def choice(kind: type[E], value: str, what: str) -> E:
    """``value`` as a member of ``kind``, or a PrunekitError naming ``what`` and the choices."""
    try:
        return kind(value)
    except ValueError:
        raise PrunekitError(f"unknown {what} {value!r}; choose one of {', '.join(kind)}") from None
