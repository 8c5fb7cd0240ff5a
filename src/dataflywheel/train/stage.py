"""The training stage: a dataset version and a config in, a fitted model and its encoders out.

Fits the ``Preprocessor`` and target encoder on the train split only, builds the configured
model from the registry, and runs the one training loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import polars as pl

from dataflywheel.config import FlywheelConfig
from dataflywheel.data.dataset import DatasetVersion
from dataflywheel.errors import DataError, ModelError
from dataflywheel.registry.bundle import ModelBundle

if TYPE_CHECKING:
    from dataflywheel.data.schema import Schema
    from dataflywheel.features.preprocessor import Preprocessor
    from dataflywheel.features.target import TargetEncoder
    from dataflywheel.tasks.base import Metric
    from dataflywheel.train.batching import Batchable
    from dataflywheel.train.loop import History


@dataclass
class Trained:
    """The training stage's output: the bundle to evaluate and register, and how it was trained."""

    bundle: ModelBundle
    """Threshold 0.5 (the evaluation stage chooses one) and no version (until registered)."""
    history: History
    n_params: int
    truncated: dict[str, int] = field(default_factory=dict)
    """Train-split texts per text column cut to max_length."""
    rejected: dict[str, int] = field(default_factory=dict)
    """Train-split rows per text column left out of the loss for being too long (``truncate: reject``)."""
    method: str = "sft"
    """How it was trained (``train.method``; ``sft`` for every task but generation's DPO)."""
    preference: dict[str, Any] = field(default_factory=dict)
    """The DPO phase's pairs, beta, reference and last losses (empty without one)."""


def resolve_task(cfg: FlywheelConfig, schema: Schema) -> str:
    """The configured task, or the one inferred from the target column; a mismatch is an error."""
    from dataflywheel.data.schema import infer_task
    from dataflywheel.tasks import get_task

    col = schema.column(cfg.data.target)
    if cfg.model.task == "auto":
        return infer_task(col)
    get_task(cfg.model.task).check_target(col, cfg.data.target)
    return cfg.model.task


def all_labels(dataset: DatasetVersion, target: str) -> pl.Series:
    """The label set over every split (labels only: the class list, not statistics)."""
    parts = [dataset.split(name).get_column(target) for name in ("train", "valid", "test")]
    return pl.concat([p.cast(pl.Utf8) for p in parts])


class Encoded(NamedTuple):
    batch: Batchable
    truncated: dict[str, int]
    """Texts per text column cut to max_length."""
    rejected: dict[str, int]
    """Rows per text column left out of the loss for being too long."""


def encode(pre: Preprocessor, target_enc: TargetEncoder, df: pl.DataFrame, target: str, task: str) -> Encoded:
    """The rows of ``df`` as a :class:`Batchable`, with the texts truncated and rejected per text column."""
    import torch

    from dataflywheel.features.batch import to_tensors
    from dataflywheel.tasks import get_task
    from dataflywheel.train.loop import Batchable

    batch = pre.transform(df)
    y = target_enc.transform(df.get_column(target))
    y_t = get_task(task).prepare_y(torch.as_tensor(np.array(y)), torch.float32)
    named = batch.inputs
    inputs = to_tensors(named, list(named), dtype=torch.float32, device=torch.device("cpu"))
    return Encoded(Batchable(inputs, y_t, pre.pad_ids_), batch.truncated, batch.rejected)


def valid_metrics(task: str) -> dict[str, Metric]:
    """Per-epoch validation metrics (logged as ``val_<name>``), usable for early stopping."""
    from dataflywheel.tasks import get_task

    return dict(get_task(task).valid_metrics())


def train_on_dataset(
    cfg: FlywheelConfig,
    dataset: DatasetVersion,
    *,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Trained:
    """Fit and train (``progress``/``log``: see :func:`~dataflywheel.train.loop.fit`)."""
    from dataflywheel.features.preprocessor import Preprocessor
    from dataflywheel.features.target import TargetEncoder
    from dataflywheel.models.base_model import prepare_config
    from dataflywheel.models.registry import build_model, model_spec, text_columns
    from dataflywheel.tasks import get_task
    from dataflywheel.train.loop import fit

    schema = dataset.schema()
    cfg = prepare_config(cfg, schema)  # pretrained: portable base reference + hash, the base's tokenizer
    task = resolve_task(cfg, schema)
    kind = get_task(task)
    target = cfg.data.target
    train_df, valid_df = dataset.split("train"), dataset.split("valid")
    if train_df.height == 0:
        raise DataError("the train split is empty", where=f"dataset {dataset.id}", fix="add rows or change data.split")

    max_texts = text_columns(cfg.model.type)
    pre = Preprocessor.from_schema(
        schema, cfg.data.features, exclude=cfg.data.exclude, text=max_texts != 0, max_texts=max_texts,
        base_dir=cfg.base_dir, text_params=kind.text_params(cfg.data),
    ).fit(train_df)
    texts = list(pre.text_encoders.values())
    text_args: dict[str, Any] = {}
    if texts:
        text_args = {"text_vocab_size": texts[0].vocab_size_, "max_length": texts[0].max_length}
    if len(texts) > 1:
        text_args["more_text"] = [[t.vocab_size_, t.max_length] for t in texts[1:]]
    target_enc = TargetEncoder(task)
    target_enc.fit(all_labels(dataset, target) if kind.has_classes else train_df.get_column(target))
    n_outputs = kind.n_outputs(target_enc)
    spec = model_spec(
        cfg.model.type,
        n_numeric=pre.n_numeric_,
        cardinalities=list(pre.cardinalities_),
        n_outputs=n_outputs,
        task=task,
        **{**cfg.model.params, **text_args},
    )
    import torch

    torch.manual_seed(cfg.train.seed)
    model = build_model(spec, base_dirs=[cfg.base_dir])
    from dataflywheel.features.batch import check_reads, model_reads

    check_reads(model_reads(model), pre.produces_, where="model.type")  # before any training
    unread = [name for name in kind.requires_reads if name not in model_reads(model)]
    if unread:
        raise ModelError(f"a {task} model must read {unread}; a {cfg.model.type} model reads "
                         f"{list(model_reads(model))}", where="model.type",
                         fix=f"use a model type that reads {unread} (see the README's model table)")
    train_b, truncated, rejected = encode(pre, target_enc, train_df, target, task)
    valid_b = encode(pre, target_enc, valid_df, target, task).batch if valid_df.height else None
    history = fit(
        model,
        train_b,
        valid_b,
        cfg.train,
        task,
        metrics=valid_metrics(task),
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        progress=progress,
        log=log,
        target_scale=kind.target_scale(target_enc),
    )
    model.cpu()  # evaluation, the bundle and serving run on the CPU, whatever train.device was
    n_params = sum(p.numel() for p in model.parameters())
    bundle = ModelBundle(model=model, task=task, preprocessor=pre, target=target_enc, schema=schema, spec=spec,
                         target_column=target, privacy=cfg.privacy)
    return Trained(bundle, history, n_params, dict(truncated or {}), dict(rejected or {}))
