"""``train.method``: what the training stage runs for a generation model.

- ``sft`` (every task's only method): fit the encoders, build the model and learn the
  completions (:func:`~dataflywheel.train.stage.train_on_dataset`).
- ``dpo``: start from the champion's network as it was trained (its LoRA adapters separate and
  trainable, :func:`~dataflywheel.registry.bundle.read_trainable_model`) and tune it on the
  dataset's preference pairs; the champion is the reference.
- ``sft+dpo``: ``sft``, then tune that model on the pairs; it is the reference.

The DPO phase is :mod:`~dataflywheel.train.preference` through the same loop (``fit`` with the
DPO objective), its checkpoints under the run's folder (``dpo/``), the reference
log-probabilities cached in the artifact store (``models/reference/``). ``sft+dpo`` on a version
without pairs (a first run on chat data) is SFT alone, and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dataflywheel.errors import ConfigError, DataError

if TYPE_CHECKING:
    import polars as pl

    from dataflywheel.config import FlywheelConfig
    from dataflywheel.data.dataset import DatasetVersion
    from dataflywheel.features.preprocessor import Preprocessor
    from dataflywheel.store import Project
    from dataflywheel.train.preference import PairBatchable
    from dataflywheel.train.stage import Trained

Log = Callable[[str], None]
REFERENCE_CACHE = "models/reference"
"""Where reference log-probabilities are kept in the artifact store."""


def train_with_method(cfg: FlywheelConfig, project: Project, dataset: DatasetVersion, run_key: str, *,
                      checkpoint_dir: Path, resume: bool = False, progress: bool = True,
                      log: Log = lambda _m: None) -> Trained:
    """The training stage's model, trained by ``cfg.train.method`` (module docstring)."""
    from dataflywheel.feedback.completion_set import preference_pairs
    from dataflywheel.train.stage import train_on_dataset

    method = cfg.train.method
    if method != "sft" or cfg.model.task == "generation":
        log(f"training method: {method} (train.method)")
    if method == "dpo":
        trained, reference = champion_start(cfg, project, dataset)
    else:
        trained = train_on_dataset(cfg, dataset, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress,
                                   log=log)
        reference = f"run {run_key} (sft)"
    if method == "sft":
        return trained
    _check_generation(trained.bundle.task)
    pairs = preference_pairs(dataset, "train")
    if pairs.height == 0:
        if method == "dpo":
            raise DataError(f"dataset {dataset.id} holds no preference pairs for DPO", where="train.method",
                            fix="collect corrections or choices between answers (n >= 2), or use train.method: sft")
        log(f"dataset {dataset.id} holds no preference pairs: sft+dpo trained the SFT phase alone")
        return replace(trained, method="sft")
    log(f"DPO: {pairs.height} preference pairs, beta {cfg.train.dpo.beta}, reference {reference}")
    return tune_on_pairs(cfg, project, trained, pairs, preference_pairs(dataset, "valid"), reference,
                         checkpoint_dir=checkpoint_dir / "dpo", resume=resume, progress=progress, log=log)


def _check_generation(task: str) -> None:
    from dataflywheel.tasks import get_task

    if get_task(task).loss != "sft":
        raise ConfigError(f"a {task} model has no completions to prefer: DPO tunes generation models",
                          where="train.method", fix="use train.method: sft")


def champion_start(cfg: FlywheelConfig, project: Project, dataset: DatasetVersion) -> tuple[Trained, str]:
    """The champion as a :class:`~dataflywheel.train.stage.Trained` to tune further (nothing trained
    yet: an empty history), and the name of it as the reference."""
    from dataflywheel.features.preprocessor import Preprocessor
    from dataflywheel.features.target import TargetEncoder
    from dataflywheel.registry import versions
    from dataflywheel.registry.bundle import ModelBundle, read_trainable_model
    from dataflywheel.train.loop import History
    from dataflywheel.train.stage import Trained

    champion = versions.alias_version(project, versions.CHAMPION)
    if champion is None:
        raise ConfigError("train.method dpo tunes the champion, and there is none yet", where="train.method",
                          fix="train the first version with train.method: sft (or sft+dpo)")
    info = versions.resolve(project, champion)
    _check_generation(info.task)
    folder = project.artifacts.path(info.artifact)
    model, meta = read_trainable_model(folder, base_dirs=[cfg.base_dir])
    bundle = ModelBundle(model=model, task=info.task, preprocessor=Preprocessor.load(folder / "preprocessor.json"),
                         target=TargetEncoder.from_dict(meta["target_encoder"]), schema=dataset.schema(),
                         spec=meta["spec"], target_column=cfg.data.target, privacy=cfg.privacy)
    empty = History(epochs=[], best_epoch=None, stopped_early=False, threads=torch.get_num_threads(),
                    resumed_from=None, seconds=0.0, epochs_planned=0)
    n_params = sum(p.numel() for p in model.parameters())
    return Trained(bundle, empty, n_params, method="dpo"), f"model v{champion} (run {info.run_id})"


def reference_pairs(model: torch.nn.Module, pre: Preprocessor, pairs: pl.DataFrame, cfg: FlywheelConfig,
                    cache_folder: Path, reference: str, log: Log) -> PairBatchable | None:
    """``pairs`` encoded, with the reference log-probabilities (``model`` before DPO) as their
    target, read from the cache or computed and cached; pairs with an empty side left out
    (None when none is left)."""
    from dataflywheel.train.preference import ReferenceCache, encode_pairs, keep_rows, sequence_logps

    if pairs.height == 0:
        return None
    data = encode_pairs(pre, pairs, cfg.data.prompt_column, cfg.data.target)
    cache = ReferenceCache(cache_folder)
    key = cache.key(reference, pairs, {"prompt": cfg.data.prompt_column})  # the reference fixes the encoder
    logps = cache.get(key, pairs.height)
    if logps is None:
        logps = sequence_logps(model, data, cfg.train.dpo.batch_size or cfg.train.batch_size)
        cache.put(key, logps)
    else:
        log(f"DPO: reference log-probabilities of {pairs.height} pairs read from the cache")
    data.y = logps
    keep = (data.labelled_tokens() > 0).all(dim=1)
    if not bool(keep.all()):
        log(f"DPO: {int((~keep).sum())} pairs with a side that keeps no completion token left out "
            "(prompt too long)")
    return keep_rows(data, keep) if bool(keep.any()) else None


def tune_on_pairs(cfg: FlywheelConfig, project: Project, trained: Trained, train_pairs: pl.DataFrame,
                  valid_pairs: pl.DataFrame, reference: str, *, checkpoint_dir: Path, resume: bool, progress: bool,
                  log: Log) -> Trained:
    """``trained``'s model tuned by DPO on ``train_pairs`` (validated on ``valid_pairs``)."""
    from dataflywheel.train.loop import fit
    from dataflywheel.train.preference import DPOObjective

    bundle = trained.bundle
    model, pre = bundle.model, bundle.preprocessor
    folder = project.artifacts.path(REFERENCE_CACHE)
    model.cpu()
    train = reference_pairs(model, pre, train_pairs, cfg, folder, reference, log)
    if train is None:
        raise DataError("every preference pair has a side too long to keep a completion token",
                        where="data.features (prompt).max_length", fix="raise max_length or use truncate: left")
    valid = reference_pairs(model, pre, valid_pairs, cfg, folder, reference, log)
    dpo = cfg.train.dpo
    settings = cfg.train.model_copy(update={"epochs": dpo.epochs or cfg.train.epochs, "lr": dpo.lr or cfg.train.lr,
                                            "batch_size": dpo.batch_size or cfg.train.batch_size})
    history = fit(model, train, valid, settings, bundle.task, objective=DPOObjective(dpo.beta),
                  checkpoint_dir=checkpoint_dir, resume=resume, progress=progress, log=log)
    model.cpu()
    summary: dict[str, Any] = {"pairs": len(train), "valid_pairs": 0 if valid is None else len(valid),
                               "beta": dpo.beta, "reference": reference}
    last = history.epochs[-1] if history.epochs else {}
    summary |= {k: last[k] for k in ("loss", "val_loss", "val_reward_accuracy", "val_reward_margin") if k in last}
    return replace(trained, history=history, method=cfg.train.method, preference=summary)
