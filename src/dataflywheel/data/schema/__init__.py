"""What a table's columns are: inferred types and the statistics later batches are checked against.

A :class:`Schema` is saved beside every dataset version as JSON, so it holds only plain values
(finite floats, strings). Category values are compared as strings everywhere; use
:func:`category_strings` so that ``1`` and ``1.0`` are the same category.

- :mod:`.columns`: the Schema model (:class:`ColumnSchema`, :class:`Schema`, its JSON file);
- :mod:`.values`: how cells are read (category strings, missing cells, parsing);
- :mod:`.inference`: :func:`infer_schema` and :func:`infer_task`.

Import from here (``from dataflywheel.data.schema import Schema``).
"""

from dataflywheel.data.schema.columns import SCHEMA_VERSION, ColumnSchema, Schema
from dataflywheel.data.schema.inference import (
    CATEGORY_SHARE,
    EXACT_FLOAT_DISTINCT,
    MAX_CATEGORIES,
    MAX_CATEGORY_LENGTH,
    MAX_TARGET_CLASSES,
    NUMERIC_BLOCK_CELLS,
    PARSE_SHARE,
    infer_schema,
    infer_task,
)
from dataflywheel.data.schema.values import (
    category_strings,
    known_categories,
    missing_mask,
    parse_datetimes,
    parse_numbers,
    unseen_mask,
)

__all__ = [
    "CATEGORY_SHARE",
    "EXACT_FLOAT_DISTINCT",
    "MAX_CATEGORIES",
    "MAX_CATEGORY_LENGTH",
    "MAX_TARGET_CLASSES",
    "NUMERIC_BLOCK_CELLS",
    "PARSE_SHARE",
    "SCHEMA_VERSION",
    "ColumnSchema",
    "Schema",
    "category_strings",
    "infer_schema",
    "infer_task",
    "known_categories",
    "missing_mask",
    "parse_datetimes",
    "parse_numbers",
    "unseen_mask",
]
