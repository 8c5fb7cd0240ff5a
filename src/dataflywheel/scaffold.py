"""``flywheel init``: a starter flywheel.yaml from a look at the data."""

from __future__ import annotations

import os
from pathlib import Path

from dataflywheel.errors import ConfigError

HEADER = """\
# flywheel.yaml, written by `flywheel init`. Edit freely; `flywheel validate` checks it.
# Feature types were inferred from the data: change a type (number, category, binary, text,
# datetime) or an encoder (zscore, minmax, none; index, onehot) where the guess is wrong.
"""


def starter_config(data: str, target: str, base_dir: Path) -> dict:
    from dataflywheel.config import SourceConfig
    from dataflywheel.data.schema import infer_schema, infer_task
    from dataflywheel.data.sources import source_from_config

    source_cfg = SourceConfig.from_shorthand(data)
    source = source_from_config(source_cfg, Path.cwd())
    df = source.read()
    schema = infer_schema(df, target=target)
    task = infer_task(schema.column(target))
    if data.startswith("sklearn:"):
        source_value = data
    else:
        source_value = os.path.relpath(Path(data).resolve(), base_dir.resolve())
    features = [{"name": c.name, "type": c.type} for c in schema.features]
    name = data.split(":", 1)[1] if data.startswith("sklearn:") else Path(data).stem
    metric = {"binary": "roc_auc", "multiclass": "macro_f1", "regression": "rmse"}[task]
    return {
        "project": name,
        "data": {
            "source": source_value,
            "target": target,
            "features": features,
            "split": {"train": 0.7, "valid": 0.15, "test": 0.15, "seed": 42},
        },
        "model": {"type": "mlp", "task": task, "params": {"hidden": [64, 64], "activation": "relu", "dropout": 0.0}},
        "train": {"epochs": 50, "batch_size": 32, "optimizer": "adam", "lr": 0.001, "seed": 0},
        "evaluate": {"metric": metric, "min_improvement": 0.0},
    }


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
