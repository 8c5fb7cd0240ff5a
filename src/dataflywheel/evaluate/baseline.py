"""What a fine-tune is compared with: its base model before training, or the champion, item by item.

A model built on a pretrained base (:class:`~dataflywheel.models.capabilities.BuiltOnBase`) is
rebuilt from its spec without its trained weights: the base as it was loaded for training (a
LoRA model's fresh adapters add nothing). When the task says such a build answers as the base
does (:attr:`~dataflywheel.tasks.Task.compares_base`: a causal LM, not a classifier with a fresh
head), :func:`base_predictor` gives it with the fine-tune's own encoders, so both are scored by
the same code on the same rows. :func:`intervals` turns two models' per-item scores (the
metrics' ``item_scores``) into paired bootstrap intervals of the differences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dataflywheel.registry.predictor import Predictor

ITEM_SCORES = "item_scores"
"""The metrics key of per-item scores: ``{metric: [one score per item]}``, each list's mean that metric."""


def base_predictor(predictor: Predictor, base_dirs: Sequence[Path]) -> Predictor | None:
    """``predictor``'s model as its spec builds it before training, with the same encoders and
    redaction, unregistered; None when the task does not compare with the base or the model has none."""
    from dataflywheel.models.capabilities import BuiltOnBase, HasInferenceForm
    from dataflywheel.models.registry import build_model
    from dataflywheel.registry.predictor import Predictor

    if not predictor.task_object.compares_base or not isinstance(predictor.model, BuiltOnBase):
        return None
    model = build_model(predictor.bundle.spec, base_dirs=list(base_dirs))
    if isinstance(model, HasInferenceForm):
        model = model.for_inference()
    model.eval()
    return Predictor(replace(predictor.bundle, model=model, version=None), privacy=predictor.bundle.privacy)


def intervals(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per metric both metrics dicts hold item scores for (on the same items): the paired
    bootstrap interval of ours minus theirs (:func:`~dataflywheel.evaluate.bootstrap.paired_interval`)."""
    from dataflywheel.evaluate.bootstrap import paired_interval

    a, b = ours.get(ITEM_SCORES) or {}, theirs.get(ITEM_SCORES) or {}
    out: dict[str, dict[str, Any]] = {}
    for metric, scores in a.items():
        other = b.get(metric)
        if other is not None and len(other) == len(scores) and len(scores) > 0:
            out[metric] = paired_interval(scores, other).to_dict()
    return out


def describe(found: dict[str, dict[str, Any]], other: str) -> str:
    """The intervals in one line: ``rouge_l 0.41 vs base 0.12 (+0.29, 95 % interval [+0.26, +0.33]); ...``."""
    from dataflywheel.evaluate.bootstrap import Interval

    parts = []
    for metric, found_interval in found.items():
        fields = {k: v for k, v in found_interval.items() if k != "excludes_zero"}
        parts.append(Interval(**fields).describe(metric, other))
    return "; ".join(parts)
