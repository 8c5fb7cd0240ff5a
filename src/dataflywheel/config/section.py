"""The base of every config section, and the validators that several sections share."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def check_device(name: str) -> str:
    """A torch device name this project accepts: auto, cpu, cuda or cuda:N."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise ValueError(f"must be auto, cpu, cuda or cuda:N (got {name!r})")
    return name
