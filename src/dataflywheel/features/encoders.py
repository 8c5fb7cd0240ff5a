"""The built-in per-column encoders, registered by name: one polars Series in, one numpy array out.

The contract and the registry are :mod:`dataflywheel.features.encoder`; the encoders are in
:mod:`~dataflywheel.features.numbers` (``number``), :mod:`~dataflywheel.features.categories`
(``category``, ``binary``) and :mod:`~dataflywheel.features.datetimes` (``datetime``); text is
:mod:`dataflywheel.features.text`. This module registers them and is where they are imported
from.

Number and datetime encoders never raise on bad cells (see :mod:`~dataflywheel.features.numbers`).
"""

from __future__ import annotations

from dataflywheel.features.categories import BinaryEncoder, CategoryEncoder
from dataflywheel.features.datetimes import DATETIME_FORMATS, DatetimeEncoder, learn_datetime_format
from dataflywheel.features.encoder import ENCODERS, Encoder, OutputKind, register_encoder
from dataflywheel.features.numbers import RAW_LIMIT, Z_LIMIT, NumberEncoder, stat_or

__all__ = [
    "DATETIME_FORMATS", "ENCODERS", "RAW_LIMIT", "Z_LIMIT", "BinaryEncoder", "CategoryEncoder", "DatetimeEncoder",
    "Encoder", "NumberEncoder", "OutputKind", "learn_datetime_format", "register_encoder", "stat_or",
]

register_encoder("number", NumberEncoder)
register_encoder("category", CategoryEncoder)
register_encoder("binary", BinaryEncoder)
register_encoder("datetime", DatetimeEncoder)
