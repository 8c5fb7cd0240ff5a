"""``flywheel init``: a starter flywheel.yaml from a look at the data."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from dataflywheel.errors import ConfigError

HEADER = """\
# flywheel.yaml, written by `flywheel init`. Edit freely; `flywheel validate` checks it.
# Feature types were inferred from the data: change a type (number, category, binary, text,
# datetime) or an encoder (zscore, minmax, none; index, onehot) where the guess is wrong.
# Columns whose every value is distinct (row identifiers) are listed under data.exclude.
"""


def starter_config(data: str, target: str, base_dir: Path) -> dict:
    from dataflywheel.config import SourceConfig
    from dataflywheel.data.schema import infer_schema, infer_task
    from dataflywheel.data.sources import source_from_config

    source_cfg = SourceConfig.from_shorthand(data)
    source = source_from_config(source_cfg, Path.cwd())
    df = source.read()
    schema = infer_schema(df, target=target)
    target_col = schema.column(target)
    if target_col.n_unique < 2:
        raise ConfigError(
            f"target {target!r} has {target_col.n_unique} distinct non-missing value(s); a model needs at least 2",
            where=f"{data} column {target}", fix="choose another --target or add labelled rows")
    task = infer_task(target_col)
    ids = identifier_columns(df, schema, target)
    if data.startswith("sklearn:"):
        source_value = data
    else:
        source_value = os.path.relpath(Path(data).resolve(), base_dir.resolve())
    features = [{"name": c.name, "type": c.type} for c in schema.features if c.name not in ids]
    name = data.split(":", 1)[1] if data.startswith("sklearn:") else Path(data).stem
    metric = {"binary": "roc_auc", "multiclass": "macro_f1", "regression": "rmse"}[task]
    return {
        "project": name,
        "data": {
            "source": source_value,
            "target": target,
            **({"exclude": ids} if ids else {}),
            "features": features,
            "split": {"train": 0.7, "valid": 0.15, "test": 0.15, "seed": 42},
        },
        "model": {"type": "mlp", "task": task, "params": {"hidden": [64, 64], "activation": "relu", "dropout": 0.0}},
        "train": {"epochs": 50, "batch_size": 32, "optimizer": "adam", "lr": 0.001, "seed": 0},
        "evaluate": {"metric": metric, "min_improvement": 0.0},
    }


ID_NAME = re.compile(r"(^|[_\s-])(id|uuid|key)$|^id[_\s-]", re.IGNORECASE)


def identifier_columns(df: Any, schema: Any, target: str) -> list[str]:
    """Columns that identify rows rather than describe them: every value distinct in an integer
    or string column, or in a column named like ``id``, ``user_id``, ``uuid``. A model would
    only memorise them, so the starter config excludes them."""
    import polars as pl

    ids = []
    for col in schema.features:
        series = df.get_column(col.name)
        if df.height <= 20 or series.drop_nulls().n_unique() != df.height:
            continue
        if series.dtype.is_integer() or series.dtype == pl.Utf8 or ID_NAME.search(col.name):
            ids.append(col.name)
    return ids


def write_starter_config(data: str, target: str, output: Path, *, force: bool = False) -> Path:
    import yaml

    from dataflywheel.config import config_from_dict
    from dataflywheel.store.artifacts import atomic_write_text

    output = Path(output)
    if output.exists() and not force:
        raise ConfigError("already exists", where=str(output), fix="pass --force to overwrite or --output another path")
    raw = starter_config(data, target, output.parent)
    config_from_dict(raw, where=str(output))  # what we write must validate
    body = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, HEADER + body)
    return output
