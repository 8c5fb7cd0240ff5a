"""The one config model: pydantic classes mirroring flywheel.yaml.

Every class forbids unknown keys, so a typo is an error rather than a silently ignored
setting. :func:`load_config` turns pydantic's errors into one line that names the YAML path
and the fix, e.g. ``data.split.valid: must be between 0 and 1 (got 1.5)``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dataflywheel.errors import ConfigError

FeatureType = Literal["number", "category", "binary", "text", "datetime"]
Backend = Literal["torch", "int8", "onnx", "onnx-int8"]
"""What runs a served model's network (``serve.backend``); see :mod:`dataflywheel.export`."""
ONNX_BACKENDS: tuple[Backend, ...] = ("onnx", "onnx-int8")
"""The backends that run an ONNX export on onnxruntime."""
PiiKind = Literal["email", "phone", "card", "ip", "name"]
"""What :mod:`dataflywheel.privacy` can redact."""
DEFAULT_PII_KINDS: tuple[PiiKind, ...] = ("email", "phone", "card", "ip")
AnomalyKind = Literal[
    "missing_column", "extra_column", "type_change", "out_of_range", "unseen_category", "missing_jump"
]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(Section):
    """Where the raw data comes from. A plain string in YAML is a shorthand: a path
    (its extension picks the reader) or ``sklearn:NAME`` for a built-in example."""

    type: Literal["auto", "csv", "tsv", "jsonl", "parquet", "sql", "sklearn"] = "auto"
    path: str | None = None
    """File or folder (csv, tsv, jsonl, parquet); relative to flywheel.yaml's folder."""
    url: str | None = None
    """SQLAlchemy URL for ``type: sql``, e.g. ``sqlite:///data.db``."""
    query: str | None = None
    """SQL query for ``type: sql``."""
    name: str | None = None
    """Built-in example for ``type: sklearn``: breast_cancer, iris, wine, diabetes."""
    delimiter: str | None = None
    max_columns: int = Field(200_000, ge=1)
    """Most columns a file may have (csv/tsv header, Parquet schema): a wider file is refused
    before it is parsed, since each column costs several KB of memory however few its rows."""

    @model_validator(mode="after")
    def _needs(self) -> SourceConfig:
        if self.type == "sql" and not (self.url and self.query):
            raise ValueError("a sql source needs both url and query")
        if self.type == "sklearn" and not self.name:
            raise ValueError("a sklearn source needs name (e.g. breast_cancer)")
        if self.type in ("auto", "csv", "tsv", "jsonl", "parquet") and not self.path:
            raise ValueError("needs path (a file or folder of data)")
        return self

    @classmethod
    def from_shorthand(cls, value: str) -> SourceConfig:
        if value.startswith("sklearn:"):
            return cls(type="sklearn", name=value.split(":", 1)[1])
        return cls(type="auto", path=value)


class FeatureConfig(Section):
    """Overrides for one input column; columns not listed keep their inferred type."""

    name: str
    type: FeatureType | None = None
    encoder: Literal["auto", "zscore", "minmax", "none", "index", "onehot"] = "auto"
    """number: zscore (default), minmax, none; category: index (default) or onehot."""
    max_length: int = Field(128, ge=4)
    """text: most tokens per text, [CLS] and [SEP] included; longer texts are truncated (counted)."""
    vocab_size: int = Field(8000, ge=64)
    """text: WordPiece vocabulary trained on the train split (ignored with ``tokenizer``)."""
    tokenizer: str | None = None
    """text: a local folder (or tokenizer.json) of a Hugging Face fast tokenizer to use instead
    of training one; relative to flywheel.yaml."""


class MissingConfig(Section):
    """How missing cells are filled, per feature type (statistics from the train split)."""

    number: Literal["drop", "mean", "median", "most_frequent", "constant"] = "median"
    category: Literal["drop", "most_frequent", "constant"] = "most_frequent"
    binary: Literal["drop", "most_frequent", "constant"] = "most_frequent"
    text: Literal["drop", "constant"] = "drop"
    datetime: Literal["drop", "most_frequent", "constant"] = "most_frequent"
    constant: float | str = 0.0
    """Fill value for the ``constant`` strategy (text uses an empty string)."""


class ProcessingConfig(Section):
    drop_duplicates: bool = True
    missing: MissingConfig = Field(default_factory=MissingConfig)
    clip_quantiles: tuple[float, float] | None = None
    """Clip numbers to these train-split quantiles, e.g. [0.001, 0.999]; null disables."""
    coerce: Literal["coerce", "reject"] = "coerce"
    """A cell that cannot be read as its column's type: coerce to missing (and count it) or
    reject the data with an error naming the row."""

    @field_validator("clip_quantiles")
    @classmethod
    def _quantiles(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not (0 <= v[0] < v[1] <= 1):
            raise ValueError(f"must be two quantiles 0 <= low < high <= 1 (got {list(v)})")
        return v


class SplitConfig(Section):
    train: float = Field(0.7, gt=0, lt=1)
    valid: float = Field(0.15, ge=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)
    seed: int = 42
    stratify: bool = True

    @model_validator(mode="after")
    def _sum(self) -> SplitConfig:
        total = self.train + self.valid + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + valid + test must sum to 1 (got {total:g})")
        return self


class DataConfig(Section):
    source: SourceConfig
    target: str
    features: list[FeatureConfig] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    """Columns to ignore (ids, free-text notes, leakage)."""
    processing: ProcessingConfig = Field(default_factory=ProcessingConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)

    @field_validator("source", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return SourceConfig.from_shorthand(v) if isinstance(v, str) else v


class ModelConfig(Section):
    type: str = "mlp"
    """A registered model builder (``flywheel models builders`` lists them)."""
    task: str = "auto"
    """``auto`` (inferred from the target column) or a registered task (:mod:`dataflywheel.tasks`)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Builder arguments, e.g. for mlp: hidden [64, 64], activation relu, dropout 0.0."""

    @field_validator("task")
    @classmethod
    def _task(cls, v: str) -> str:
        from dataflywheel.tasks import available_tasks

        if v != "auto" and v not in available_tasks():
            raise ValueError(f"must be auto or one of {', '.join(available_tasks())} (got {v!r})")
        return v


class ScheduleConfig(Section):
    warmup_steps: int = Field(0, ge=0)
    decay: Literal["constant", "linear", "cosine"] = "constant"


class EarlyStoppingConfig(Section):
    metric: str = "auto"
    """A logged validation value: val_loss, val_roc_auc, val_accuracy, val_r2. auto = the task's
    choice when logged (val_roc_auc for binary, the quantity the model is judged on), val_loss
    otherwise."""
    mode: Literal["auto", "min", "max"] = "auto"
    """auto = max for metrics where higher is better, min for losses."""
    patience: int = Field(10, ge=1)
    min_delta: float = Field(0.0, ge=0)


def resolve_early_stopping(
    es: EarlyStoppingConfig, task: str, logged: tuple[str, ...] = ()
) -> tuple[str, Literal["min", "max"]]:
    """The concrete (metric, mode) for ``auto`` settings; ``logged`` lists the validation
    metrics the loop computes (without the ``val_`` prefix)."""
    metric = es.metric
    if metric == "auto":
        from dataflywheel.tasks import get_task

        preferred = get_task(task).early_stopping
        metric = f"val_{preferred}" if preferred in logged else "val_loss"
    mode = es.mode
    if mode == "auto":
        mode = "min" if metric.endswith(("loss", "rmse", "mae", "mse")) else "max"
    return metric, mode


def check_device(name: str) -> str:
    """A torch device name this project accepts: auto, cpu, cuda or cuda:N."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise ValueError(f"must be auto, cpu, cuda or cuda:N (got {name!r})")
    return name


class TrainConfig(Section):
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(32, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    loss: Literal["auto", "bce", "cross_entropy", "mse"] = "auto"
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    grad_clip: float | None = Field(None, gt=0)
    early_stopping: EarlyStoppingConfig | None = Field(default_factory=EarlyStoppingConfig)
    seed: int = 0
    threads: int | None = Field(None, ge=1)
    """torch intra-op threads; null picks one by model size and available cores."""
    grad_accumulation: int = Field(1, ge=1)
    """Micro-batches (of ``batch_size`` rows) whose gradients add up to one optimiser step."""
    max_steps: int | None = Field(None, ge=1)
    """Stop after this many optimiser steps (even mid-epoch); the schedule spans them."""
    eval_every_steps: int | None = Field(None, ge=1)
    """Also validate every N optimiser steps (logged in the history's ``evals``)."""
    device: str = "auto"
    """Where ``fit`` runs: auto (a CUDA GPU when torch sees one and the model has 5 M parameters or
    more, else the CPU), cpu, cuda or cuda:N. The trained model comes back to the CPU for
    evaluation and the bundle."""
    bf16: bool = False
    """Train under torch.autocast(bfloat16) where the device supports it (CUDA from compute
    capability 8.0; CPUs with native bf16), else in fp32 with a warning."""
    compile: bool = False
    """Train through torch.compile (needs a C++ compiler; first steps are slow)."""
    bucket_by_length: bool = True
    """Text models: draw shuffled batches from length-sorted chunks, so padding stays short."""

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return check_device(v)


class EvaluateConfig(Section):
    """Evaluation and the promotion gate: a challenger replaces the champion only if it beats
    it on ``metric`` by ``min_improvement`` and regresses on no ``guard_metrics`` by more than
    ``tolerance``, both models scored on the same test split (plus held-out feedback)."""

    metric: str = "auto"
    """Primary metric for comparing models: auto = roc_auc (binary), macro_f1 (multiclass),
    rmse (regression)."""
    min_improvement: float = Field(0.0, ge=0)
    """A challenger must beat the champion's primary metric by at least this much."""
    guard_metrics: list[str] | Literal["auto"] = "auto"
    """Metrics that must not regress: auto = accuracy, f1, log_loss (binary); accuracy,
    log_loss (multiclass); mae, r2 (regression)."""
    tolerance: float = Field(0.01, ge=0)
    """Largest regression allowed on a guard metric: a share of the champion's value for
    unbounded metrics (mae, rmse, log_loss: 0.01 = 1 % worse), an absolute amount for bounded
    ones (accuracy, f1, roc_auc, r2, ...)."""
    feedback_holdout: float = Field(0.2, ge=0, lt=1)
    """Share of new labelled feedback held out of retraining and added to the evaluation."""


class RetrainConfig(Section):
    """When the loop retrains by itself (``flywheel serve --auto-retrain``)."""

    every_n_labels: int | None = Field(50, ge=1)
    """Retrain after this many new labelled feedback rows; null disables."""
    drift_threshold: float | None = Field(None, gt=0)
    """Retrain when any feature's PSI over recent inputs exceeds this; null disables."""
    poll_seconds: float = Field(5.0, gt=0)
    """How often the retrain worker checks the trigger."""


class MonitorConfig(Section):
    window: int = Field(1000, ge=10)
    """Recent predictions compared against the training data."""
    bins: int = Field(10, ge=2, le=100)
    """Quantile bins for PSI on numbers."""
    min_recent: int = Field(200, ge=1)
    """Recent predictions needed before drift can trigger a retrain (PSI on few rows is noise)."""


Guard = Literal["open", "token"]


class AuthConfig(Section):
    """Which route classes need the bearer token when ``FLYWHEEL_API_TOKEN`` is set (the access
    matrix, :mod:`dataflywheel.serve.auth`). Probes (``/v1/health``, ``/v1/ready``) are always
    open; feedback and admin routes always need the token."""

    read: Guard = "token"
    """GET /v1/model, /v1/monitor, /metrics, /docs and /openapi.json."""
    predict: Guard = "open"
    """POST /v1/predict and /v1/explain."""


class ServeConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_batch_size: int = Field(64, ge=1)
    """Most records in one forward pass."""
    max_wait_ms: float = Field(2.0, ge=0)
    """How long the first request of a batch waits for others to join it."""
    max_records: int = Field(1000, ge=1)
    """Most records in one request (more is a 413)."""
    max_body_bytes: int = Field(1_048_576, ge=1024)
    """Largest request body (more is a 413)."""
    log_mode: Literal["sync", "async"] = "sync"
    """sync: a prediction's response is sent after its log row is committed. async: sent at
    once; a crash can lose the rows of the last commit group (at most max_wait + one commit)."""
    swap_poll_seconds: float = Field(1.0, gt=0)
    """How often the server checks whether its alias moved (hot swap)."""
    backend: Backend = "torch"
    """What runs the network: torch (fp32, the bundle as trained), int8 (torch, Linear layers
    dynamically quantised at load), onnx (ONNX Runtime on the exported fp32 graph) or onnx-int8
    (ONNX Runtime on that graph quantised to int8, the fastest on CPU). ``flywheel export``
    shows each one's accuracy against torch and its speed."""
    device: str = "auto"
    """Where the torch backend runs: auto (a CUDA GPU when torch sees one and the model has 5 M
    parameters or more, else the CPU), cpu, cuda or cuda:N. The int8 and ONNX Runtime backends
    run on the CPU."""
    auth: AuthConfig = AuthConfig()
    """The access matrix: which routes need the bearer token when one is set."""
    header_timeout_s: float | None = Field(10.0, gt=0)
    """A request's headers must arrive within this many seconds of the connection opening (or
    of the request's first byte on a kept-alive connection), else 408 and the socket is closed;
    null: no limit. Responses, streaming ones included, are never timed."""
    body_timeout_s: float | None = Field(30.0, gt=0)
    """A request's body must arrive within this many seconds of its headers, else 408; null: no limit."""

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return check_device(v)

    @model_validator(mode="after")
    def _device_fits_backend(self) -> ServeConfig:
        if self.backend != "torch" and self.device not in ("auto", "cpu"):
            raise ValueError(f"device {self.device!r} runs the torch backend only; the {self.backend} backend "
                             "runs on the CPU (set backend: torch, or device: cpu)")
        return self


class PrivacyConfig(Section):
    """PII redaction (emails, phones, card numbers, IPs; names with presidio) applied to text at
    ingestion, to prediction inputs before they are predicted on and logged, and so to every
    dataset version retraining builds from them."""

    enabled: bool = True
    columns: list[str] | Literal["text"] = "text"
    """Columns to redact: ``text`` = every text column (declared or inferred, never the target),
    or a list of string columns; a name not in the data is an error at ingestion."""
    kinds: list[PiiKind] = Field(default_factory=lambda: list(DEFAULT_PII_KINDS), min_length=1)
    """What to redact; ``name`` needs presidio-analyzer and a spaCy model."""
    replacement: str = "[{kind}]"
    """What a match becomes; ``{kind}`` is the kind's name."""

    @field_validator("columns", mode="before")
    @classmethod
    def _columns(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "text":
            raise ValueError(f"must be 'text' (every text column) or a list of column names (got {v!r})")
        return v


class StoreConfig(Section):
    root: str = ".flywheel"
    """Folder for the embedded store (SQLite file and artifacts), relative to flywheel.yaml."""
    url: str | None = None
    """SQLAlchemy URL of the metadata store; default ``sqlite:///<root>/flywheel.db``."""


class AnomalyPolicy(Section):
    """warn or fail for each kind of anomaly ``flywheel data validate`` can find."""

    missing_column: Literal["warn", "fail"] = "fail"
    extra_column: Literal["warn", "fail"] = "warn"
    type_change: Literal["warn", "fail"] = "fail"
    out_of_range: Literal["warn", "fail"] = "warn"
    unseen_category: Literal["warn", "fail"] = "warn"
    missing_jump: Literal["warn", "fail"] = "warn"
    missing_jump_threshold: float = Field(0.1, gt=0, le=1)
    """A column's missing rate may rise by this much (absolute) before it is an anomaly."""


class FlywheelConfig(Section):
    project: str = "flywheel"
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    validation: AnomalyPolicy = Field(default_factory=AnomalyPolicy)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)

    base_dir: Path = Field(default=Path("."), exclude=True)
    """Folder of flywheel.yaml; relative paths resolve against it (not a YAML key)."""

    def resolve(self, path: str | Path) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.base_dir / p

    def section_hash(self, *sections: str) -> str:
        """Content hash of the named sections, for caching and lineage."""
        payload = {s: getattr(self, s).model_dump(mode="json") for s in sections}
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def yaml_path(loc: Any) -> str:
    """A pydantic error location as a YAML path: ``("model", "params", "hidden", 1)`` ->
    ``model.params.hidden[1]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith("function-"):
            out += f".{part}" if out else str(part)
    return out


def describe_error(err: Any) -> str:
    """One pydantic error as ``YAML.PATH: what is wrong (got X)``."""
    loc = yaml_path(err["loc"])
    prefix = f"{loc}: " if loc else ""
    msg: str = err["msg"]
    kind = err["type"]
    ctx = err.get("ctx") or {}
    got = err.get("input")
    if kind == "extra_forbidden":
        return f"{prefix}unknown key; remove it or check its spelling"
    if kind == "missing":
        return f"{prefix}required; add it"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        parent, _, field = loc.rpartition(".")
        bounds = _BOUNDS.get(field)
        if bounds:
            return f"{prefix}must be {bounds} (got {got})"
        return f"{prefix}{msg.lower()} (got {got})"
    if kind == "literal_error":
        return f"{prefix}must be one of {ctx.get('expected')} (got {got!r})"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if got is not None and not isinstance(got, (dict, list)) and "got" not in msg:
        return f"{prefix}{msg} (got {got!r})"
    return f"{prefix}{msg}"


_BOUNDS = {"train": "between 0 and 1", "valid": "between 0 and 1", "test": "between 0 and 1"}


def config_from_dict(raw: Any, *, base_dir: Path | None = None, where: str = "flywheel.yaml") -> FlywheelConfig:
    if not isinstance(raw, dict):
        raise ConfigError("must be a YAML mapping with at least data.source and data.target", where=where)
    try:
        cfg = FlywheelConfig.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        first = describe_error(errors[0])
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(first + more, where=where) from None
    if base_dir is not None:
        cfg.base_dir = base_dir
    return cfg


def check_model_params(cfg: FlywheelConfig, where: str = "flywheel.yaml") -> None:
    """Raise :class:`ConfigError` naming the YAML path of a wrong ``model.params`` key or value.
    Not part of loading a config: it imports the model registry (torch), which commands that
    only read the store (``models list``, ``data show``) do not need; ``flywheel validate``,
    ``run`` and ``train`` call it before reading any data."""
    problem = model_params_problem(cfg.model)
    if problem:
        raise ConfigError(problem, where=where)


def model_params_problem(model: ModelConfig) -> str | None:
    """What is wrong with ``model.params`` for its registered model type (the first problem,
    as one line naming the YAML path), or None. Empty params need no check (and no import of
    the model registry, which imports torch); an unregistered type is reported where the
    model is built."""
    if not model.params:
        return None
    from dataflywheel.models.registry import available_models, params_class

    cls = params_class(model.type) if model.type in available_models() else None
    if cls is None:
        return None
    try:
        cls.model_validate(model.params)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        line = describe_error({**first, "loc": ("model", "params", *first["loc"])})
        if first["type"] == "extra_forbidden" and len(first["loc"]) == 1:
            line += f" (model type {model.type!r} takes {', '.join(cls.choices())})"
        return line + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
    return None


def load_config(path: str | Path) -> FlywheelConfig:
    """Read and validate flywheel.yaml; raise :class:`ConfigError` naming the bad field."""
    import yaml

    p = Path(path)
    if p.is_dir():
        p = p / "flywheel.yaml"
    if not p.is_file():
        raise ConfigError("file not found", where=str(p), fix="run `flywheel init --data FILE --target COLUMN`")
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: a 100,000-feature file in a second
        raw = yaml.load(p.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"invalid YAML{line}: {problem}", where=str(p), fix="fix the syntax") from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", where=str(p)) from None
    return config_from_dict(raw, base_dir=p.resolve().parent, where=str(p))
