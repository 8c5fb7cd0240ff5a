"""The ``data`` and ``validation`` sections: where the table comes from, how its columns are read,
cleaned and split, and which anomalies in a new batch fail it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from dataflywheel.config.section import Section

FeatureType = Literal["number", "category", "binary", "text", "datetime"]
AnomalyKind = Literal[
    "missing_column", "extra_column", "type_change", "out_of_range", "unseen_category", "missing_jump"
]


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
    truncate: Literal["auto", "right", "left", "reject"] = "auto"
    """text longer than max_length: a text column keeps its first tokens (right; auto). A
    generation prompt (max_length then bounds prompt plus completion): left (auto) drops the
    prompt's first tokens, reject leaves the row out; both are counted."""


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
    """The column the model learns: a label or value, or for ``model.task: generation`` the
    completion (with chat data, the column the final assistant turn goes to)."""
    prompt: str | None = None
    """``model.task: generation``: the column holding the prompt (default ``prompt``). Chat data
    (a ``messages`` column of ``{role, content}`` lists, and no target column) is split into
    this column (the turns before the last) and the target (the last, the assistant's)."""
    features: list[FeatureConfig] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    """Columns to ignore (ids, free-text notes, leakage)."""
    processing: ProcessingConfig = Field(default_factory=ProcessingConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)

    @field_validator("source", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return SourceConfig.from_shorthand(v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _prompt_is_not_the_target(self) -> DataConfig:
        if self.prompt is not None and self.prompt == self.target:
            raise ValueError(f"prompt and target name the same column {self.target!r}")
        return self

    @property
    def prompt_column(self) -> str:
        """``prompt``, or ``prompt`` itself when unset."""
        return self.prompt or "prompt"


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
