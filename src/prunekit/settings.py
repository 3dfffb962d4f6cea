"""What every package's config dataclass shares: a field with its CLI help, and the dtypes users name."""

from __future__ import annotations

from dataclasses import field
from typing import Any

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}  # names users give


def setting(default: Any, help: str, flag: str | None = None) -> Any:
    """A config field with the CLI's help text (and its flag name where it differs from the field's): the CLI
    builds one flag per such field, so a new setting is one field in its package's config."""
    return field(default=default, metadata={"help": help, "flag": flag})
