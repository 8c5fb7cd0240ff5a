"""Declared model parameters: the base class of each builder's params model.

Every registered model type declares what ``model.params`` may hold as a :class:`ModelParams`
subclass next to its builder (typed fields with ranges, defaults the builder's), passed to
:func:`~dataflywheel.models.registry.register_model`. Config loading and ``flywheel validate``
check ``model.params`` against it before any training; the builder parses its keyword
arguments with :meth:`ModelParams.parse`, so a wrong key or value is a :class:`ModelError`
naming its YAML path either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from dataflywheel.config import describe_error, yaml_path
from dataflywheel.errors import ModelError

PositiveInt = Annotated[int, Strict(), Field(ge=1)]
"""A positive integer; a bool, float or string is refused."""
Fraction = Annotated[float, Strict(), Field(ge=0, lt=1)]
"""A number with 0 <= x < 1 (a rate, e.g. dropout); a bool or string is refused."""
StrictBool = Annotated[bool, Strict()]

FILLED_IN = ("text_vocab_size", "more_text")
"""Fields the training stage fills in from the data (not listed as a user's choices)."""


class ModelParams(BaseModel):
    """What ``model.params`` may hold for one model type; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def choices(cls) -> list[str]:
        """The parameter names a user may set."""
        return sorted(k for k in cls.model_fields if k not in FILLED_IN)

    @classmethod
    def parse(cls, values: Mapping[str, Any], *, model_type: str = "") -> Self:
        """Validate ``values``; the first problem is a :class:`ModelError` whose ``where`` is
        ``model.params.KEY`` (``model.params.lora.r`` for a nested key) and whose message
        names the item (``[1] ...`` for the second list element)."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as exc:
            raise params_error(exc.errors()[0], cls, model_type) from None



def params_error(err: Mapping[str, Any], cls: type[ModelParams], model_type: str) -> ModelError:
    loc = list(err["loc"])
    head = next((i for i, part in enumerate(loc) if isinstance(part, int)), len(loc))
    where = yaml_path(["model", "params", *loc[:head]])
    if err["type"] == "extra_forbidden" and head == len(loc) == 1:
        kind = f" {model_type!r}" if model_type else ""
        return ModelError(f"unknown parameter for model type{kind}", where=where, fix=f"use one of {cls.choices()}")
    rest = yaml_path(loc[head:])
    message = describe_error({**err, "loc": ()})
    return ModelError(f"{rest} {message}" if rest else message, where=where)
