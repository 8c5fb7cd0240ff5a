"""What a learning task decides, in one object.

A :class:`Task` owns everything that differs between binary classification, multiclass
classification, regression and any task added later: how the target column is encoded and
decoded, the loss, the output activation and the decoding of scores into answers, the metric set
and its primary metric, the gate's guard metrics, the early-stopping default, what an explanation
explains, the report's plots and how live feedback is scored. Generic modules (training,
evaluation, the gate, prediction, serving, explanations, the report, monitoring) ask the task and
name none. Tasks are stateless; fitted state (class names, target mean) lives in the
:class:`~dataflywheel.features.target.TargetEncoder` a task method is given.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import polars as pl

if TYPE_CHECKING:
    import torch

    from dataflywheel.config import DataConfig, FeatureType, FlywheelConfig
    from dataflywheel.data.schema import ColumnSchema
    from dataflywheel.data.source import Source
    from dataflywheel.features.target import TargetEncoder

Metric = Callable[[np.ndarray, np.ndarray], float]
"""``metric(y_true, outputs) -> float`` on encoded targets and activated model outputs."""
Plot = dict[str, str]
"""``{"src": data URI, "caption": text}`` for the evaluation report."""


@dataclass(frozen=True)
class Decoded:
    """Answers for a batch of rows: what ``Predictor.predict`` and the server return."""

    values: list[Any]
    """The answer per row: a class name, or a value."""
    proba: np.ndarray | None
    """(n, k) class probabilities in ``class_names`` order; None for a task without classes."""


class Task(ABC):
    """One learning task; subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    loss: ClassVar[str]
    """The ``train.loss`` that ``auto`` picks (a name registered in :mod:`dataflywheel.train.objective`)."""
    metrics: ClassVar[Mapping[str, bool]]
    """Metric name -> higher is better; the first is the primary metric (``evaluate.metric: auto``)."""
    unbounded: ClassVar[frozenset[str]] = frozenset()
    """Metrics without a fixed scale: the gate's guard tolerance is relative to the champion for them."""
    guards: ClassVar[tuple[str, ...]]
    """The gate's guard metrics for ``evaluate.guard_metrics: auto``."""
    headline: ClassVar[tuple[str, ...]]
    """The metrics ``flywheel run`` prints."""
    early_stopping: ClassVar[str] = "loss"
    """The validation metric early stopping watches by default, when the loop logs it."""
    explained: ClassVar[str] = "value"
    """What an explanation's attributions add up to (``log-odds``, ``log-probability``, ``value``)."""
    live_metric: ClassVar[str] = "accuracy"
    """The monitor's metric of logged predictions against labelled feedback."""
    target_types: ClassVar[tuple[str, ...]] = ()
    """Target column types (``binary``, ``category``, ``number``) this task is inferred for."""
    target_state: ClassVar[tuple[str, ...]]
    """The fitted attributes of the target encoder, saved in ``model.json``."""
    has_classes: ClassVar[bool] = True
    """Answers are class names (the split is stratified; the target's classes come from every split)."""
    uses_threshold: ClassVar[bool] = False
    """A decision threshold is chosen on the validation split and shown in the report."""
    loss_in_target_units: ClassVar[bool] = False
    """The loss is an MSE on the standardised target: its root times the scale is an RMSE."""
    outputs_expected: ClassVar[str] = "1"
    """How many outputs a model of this task has, as an error message says it."""
    reads_prompt: ClassVar[bool] = False
    """The task learns a completion of a prompt column (``data.prompt``), not a label of features."""
    redacts_target: ClassVar[bool] = False
    """PII redaction (``privacy.columns: text``) covers the target column too: it is text the
    model learns to write."""
    requires_reads: ClassVar[tuple[str, ...]] = ()
    """Batch names a model of this task must read (generation: ``labels``, the completion's tokens)."""
    explainable: ClassVar[bool] = True
    """Per-prediction explanations (Integrated Gradients on the outputs) mean something for it."""
    compares_base: ClassVar[bool] = False
    """A model of this task built on a pretrained base answers as that base does before training
    (a causal LM; a classifier's fresh head does not), so the first version of such a model is
    scored beside its base on the same rows (``evaluate.compare_base``)."""
    serving: ClassVar[str] = "records"
    """Which server ``flywheel serve`` runs for its models: ``records`` (``/v1/predict`` on
    records, micro-batched) or ``generation`` (the OpenAI-compatible completions, ``serve.llm``)."""

    @property
    def primary(self) -> str:
        return next(iter(self.metrics))

    # -- the target ---------------------------------------------------------------------------

    @abstractmethod
    def fit_target(self, enc: TargetEncoder, series: pl.Series) -> None:
        """Set ``target_state`` on ``enc`` from the (non-missing) target values."""

    @abstractmethod
    def encode_target(self, enc: TargetEncoder, series: pl.Series) -> np.ndarray:
        """Targets as the model trains on them."""

    @abstractmethod
    def decode_target(self, enc: TargetEncoder, values: np.ndarray) -> np.ndarray:
        """Model outputs (or class indices) back to labels or target values."""

    def class_names(self, enc: TargetEncoder) -> list[str] | None:
        return None

    def true_values(self, enc: TargetEncoder, series: pl.Series) -> np.ndarray:
        """Targets as :meth:`evaluate` expects them."""
        return np.asarray(self.encode_target(enc, series))

    def check_target(self, col: ColumnSchema, target: str) -> None:  # noqa: B027 - optional hook
        """Raise a :class:`~dataflywheel.errors.DataError` when the configured task does not fit
        the target column (checked before training)."""

    def shape_frame(self, raw: pl.DataFrame, cfg: FlywheelConfig, source: Source) -> pl.DataFrame:
        """The table as read from ``source``, reshaped into the columns this task learns from
        (generation: a chat column into prompt and completion); default: as read. Called before
        redaction and schema inference, so ``raw`` may hold nested columns."""
        return raw

    def column_types(self, cfg: DataConfig) -> dict[str, FeatureType]:
        """Column types the task fixes whatever inference would say (generation: its prompt and
        completion are text), over ``data.features``."""
        return {}

    def duplicate_columns(self, cfg: DataConfig) -> list[str] | None:
        """The columns on which two rows are duplicates (``data.processing.drop_duplicates``);
        None: the whole row."""
        return None

    def text_params(self, cfg: DataConfig) -> dict[str, Any]:
        """Parameters added to every text column's encoder (generation: the chat encoder, which
        reads the completion beside the prompt); default none."""
        return {}

    # -- model and training -------------------------------------------------------------------

    @abstractmethod
    def n_outputs(self, enc: TargetEncoder) -> int:
        """The model's output width for a fitted target."""

    def outputs_ok(self, n_outputs: int) -> bool:
        return n_outputs == 1

    def prepare_y(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Encoded targets as the loss takes them (``dtype``: the model's float dtype)."""
        return y.to(dtype)

    def valid_metrics(self) -> dict[str, Metric]:
        """Per-epoch validation metrics (logged as ``val_<name>``)."""
        return {}

    def target_scale(self, enc: TargetEncoder) -> float | None:
        """The scale that turns :attr:`loss_in_target_units` losses into target units."""
        return None

    # -- prediction ---------------------------------------------------------------------------

    @abstractmethod
    def activate(self, logits: np.ndarray) -> np.ndarray:
        """The output activation on ``(N, n_outputs)`` float logits."""

    def scores(self, enc: TargetEncoder, outputs: np.ndarray) -> np.ndarray:
        """Activated outputs as scores for :meth:`decode` and :meth:`evaluate`."""
        return outputs

    @abstractmethod
    def decode(self, enc: TargetEncoder, scores: np.ndarray, threshold: float) -> Decoded:
        """Scores -> answers; the one decoding ``Predictor.predict`` and the server share."""

    def agreement(self, scores: np.ndarray, reference: np.ndarray, threshold: float) -> float | None:
        """The share of rows whose answer two sets of scores agree on (None without classes)."""
        return None

    def choose_threshold(self, y_true: np.ndarray, scores: np.ndarray) -> float:
        return 0.5

    # -- evaluation ---------------------------------------------------------------------------

    @abstractmethod
    def evaluate(self, y_true: Any, scores: Any, class_names: list[str] | None,
                 threshold: float) -> dict[str, Any]:
        """JSON-safe metrics of ``scores`` against ``y_true`` (see :meth:`true_values`)."""

    def answer_metrics(self, predictor: Any, df: pl.DataFrame, target: str, settings: Any) -> dict[str, Any]:
        """Metrics of what the model answers on ``df`` beyond its scores (generation: answers
        generated and compared with the references; ``settings`` is ``evaluate``). None here."""
        return {}

    def compare_answers(self, challenger: Any, champion: Any, df: pl.DataFrame, target: str,
                        settings: Any) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        """Metrics that judge the two models' answers on ``df`` against each other (generation:
        ``win_rate``, by ``settings.judge``): the challenger's, the champion's, and the rows where
        they differ most, for the report. None here."""
        return {}, {}, []

    def pair_metrics(self, predictor: Any, pairs: pl.DataFrame) -> dict[str, Any]:
        """Metrics on held-out preference pairs (columns prompt, chosen, rejected; generation:
        ``preference_accuracy``). None here."""
        return {}

    def next_version(self, cfg: Any, project: Any, parent: Any, log: Any) -> Any:
        """The next dataset version of ``parent`` from the feedback it does not hold yet, a
        :class:`~dataflywheel.feedback.trainingset.TrainingSet` (None without new feedback):
        labelled feedback as rows of the table here."""
        from dataflywheel.feedback.trainingset import build_label_version

        return build_label_version(cfg, project, parent, log=log)

    def plots(self, reference: dict[str, Any], y_true: np.ndarray | None, scores: np.ndarray | None,
              class_names: list[str] | None, threshold: float) -> tuple[list[Plot], list[str]]:
        """The report's evaluation plots and notes; ``reference`` holds the metrics."""
        return [], []

    def per_class(self, reference: dict[str, Any]) -> dict[str, Any] | None:
        """The report's per-class table (scikit-learn's classification report), if any."""
        return None

    # -- explanations -------------------------------------------------------------------------

    def explain_class(self, logits: torch.Tensor, threshold: float) -> torch.Tensor:
        """(B,) long: the class each row's explanation is for (0 without classes)."""
        import torch

        return torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)

    def explain_score(self, logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """(B,) the explained quantity (:attr:`explained`) per row, differentiable."""
        return logits[:, 0]

    def explain_scale(self, enc: TargetEncoder) -> tuple[float, float]:
        """``(scale, offset)`` taking :meth:`explain_score` into the answer's units."""
        return 1.0, 0.0

    def explain_answers(self, enc: TargetEncoder, cls: np.ndarray, logits: np.ndarray) -> list[Any]:
        """The answer per explained row."""
        return list(self.decode_target(enc, cls))

    def class_name(self, enc: TargetEncoder, cls: int) -> str | None:
        names = self.class_names(enc)
        return None if names is None else str(names[cls])

    # -- feedback -----------------------------------------------------------------------------

    @abstractmethod
    def check_label(self, label: Any, classes: list[str] | None) -> Any:
        """A feedback label as stored, for an answer whose classes were ``classes`` (None: the
        answer had none); a :class:`~dataflywheel.errors.LabelError` naming ``label`` when the
        model cannot have produced it."""

    def check_feedback(self, kind: str, value: Mapping[str, Any], prediction: Any, *,
                       redactor: Any = None) -> dict[str, Any]:
        """Feedback of ``kind`` on ``prediction`` (the logged row: ``output``, and ``input``)
        given as fields (``value``: ``label``, ``thumbs``, ``choice_index``, ``comment``, ...),
        as the feedback row stores it, its free text PII-redacted by ``redactor``; a
        :class:`~dataflywheel.errors.LabelError` naming the field otherwise (see
        :mod:`dataflywheel.feedback.completion_feedback`). Default: ``label`` (checked by
        :meth:`check_label`) or ``comment``, the feedback on an answer to a record."""
        from dataflywheel.feedback.labels import check_answer_feedback

        return check_answer_feedback(self, kind, value, prediction, redactor)

    def live_score(self, predicted: Any, label: Any) -> float:
        """One logged prediction against its label, in :attr:`live_metric`."""
        return float(str(predicted) == str(label))
