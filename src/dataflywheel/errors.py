"""One hierarchy of errors.

A :class:`FlywheelError` is the user's to fix: it carries a headline naming *where* (a file,
row, YAML path or column) and *how to fix it*. The CLI prints it as one line and exits
non-zero; the API turns it into a 4xx JSON detail. Any other exception that escapes is a bug
in dataflywheel and keeps its traceback.
"""

from __future__ import annotations


class FlywheelError(Exception):
    """An error caused by input, configuration or environment, with a fix."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.message = message
        self.where = where
        self.fix = fix
        super().__init__(self.headline())

    def headline(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.fix:
            text += f"; {self.fix}"
        return text

    def __str__(self) -> str:
        return self.headline()


class ConfigError(FlywheelError):
    """flywheel.yaml (or an equivalent dict) is invalid."""


class DataError(FlywheelError):
    """A data file, table, row or column cannot be used."""


class LabelError(DataError):
    """A feedback label the predicting model cannot have produced."""


class SchemaError(DataError):
    """Data does not match the schema it is checked against."""


class NotFittedError(FlywheelError, ValueError, AttributeError):
    """An encoder, preprocessor or model is used before ``fit``."""


class ModelError(FlywheelError):
    """A model configuration or a model bundle cannot be used."""


class BundleIntegrityError(ModelError):
    """A model bundle's file is missing or differs from its manifest."""


class StoreError(FlywheelError):
    """The metadata or artifact store cannot satisfy a request (unknown id, alias, ...)."""


class NotFoundError(StoreError):
    """A named thing (dataset version, model version, alias, prediction) does not exist."""
