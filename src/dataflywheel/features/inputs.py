"""Which columns a configured model reads: the feature columns the preprocessor encodes, and the
text column when the model type reads text."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataflywheel.errors import ConfigError

if TYPE_CHECKING:
    from dataflywheel.config import FlywheelConfig
    from dataflywheel.data.schema import Schema


def reads_text(model_type: str) -> bool:
    """Whether ``model.type`` reads a text column (see :func:`~dataflywheel.models.registry.takes_text`)."""
    from dataflywheel.models.registry import takes_text

    return takes_text(model_type)


def max_text_columns(model_type: str) -> int | None:
    """How many text columns ``model.type`` reads: 0, 1 or None for any number (see
    :func:`~dataflywheel.models.registry.text_columns`)."""
    from dataflywheel.models.registry import text_columns

    return text_columns(model_type)


def model_inputs(cfg: FlywheelConfig, schema: Schema, *, text: bool | None = None,
                 max_texts: int | None = 1) -> list[str]:
    """The columns of ``schema`` the model of ``cfg`` reads, in schema order; ``text`` says
    whether the model reads text, and ``max_texts`` how many text columns at most (None: any);
    with ``text`` None both come from the model registry, which imports torch.

    Raises :class:`ConfigError` when there is none (every column excluded, or only text for a
    model that reads no text), naming the setting to change.
    """
    from dataflywheel.features.preprocessor import Preprocessor

    if text is None:
        max_texts = max_text_columns(cfg.model.type)
        text = max_texts != 0
    pre = Preprocessor.from_schema(schema, cfg.data.features, exclude=cfg.data.exclude, text=text,
                                   max_texts=max_texts, base_dir=cfg.base_dir)
    used = {name for name, _type, _enc in pre.features} | {name for name, _params in pre.text_features}
    columns = [c.name for c in schema.features if c.name in used]
    if columns:
        return columns
    skipped = [c for c in pre.skipped if c in schema.names]
    if skipped:
        named = ", ".join(repr(c) for c in skipped)
        fix = (f"set model.type: transformer to read the text column{'s' if len(skipped) > 1 else ''} {named} "
               "(pretrained reads one), or give the data a number or category column")
    else:
        fix = "remove a column from data.exclude, or give the data a column other than the target"
    raise ConfigError(f"the {cfg.model.type} model would read no input column", where="data", fix=fix)


def config_inputs(cfg: FlywheelConfig) -> list[str]:
    """:func:`model_inputs` on the data ``cfg`` points at: reads the source and infers its schema
    as ingestion does (``data.exclude`` must name columns of the data)."""
    return config_columns(cfg)[0]


def config_columns(cfg: FlywheelConfig) -> tuple[list[str], list[str]]:
    """``(inputs, skipped text columns)`` of the data ``cfg`` points at: :func:`model_inputs`,
    and the text columns the model does not read (an ``mlp``'s), neither excluded nor the target."""
    from dataflywheel.data.dataset import check_excluded, declared_types, read_source
    from dataflywheel.data.schema import infer_schema
    from dataflywheel.data.sources import source_from_config

    source = source_from_config(cfg.data.source, cfg.base_dir)
    raw = read_source(cfg, source)
    check_excluded(raw, cfg, source.describe())
    raw = raw.drop(cfg.data.exclude)
    schema = infer_schema(raw, target=cfg.data.target, overrides=declared_types(cfg))
    inputs = model_inputs(cfg, schema)
    return inputs, [c.name for c in schema.features if c.type == "text" and c.name not in inputs]
