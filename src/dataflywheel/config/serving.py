"""The sections of the live side: ``serve`` (the server and its access matrix), ``monitor`` (drift
over recent predictions) and ``retrain`` (when the served loop retrains by itself)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from dataflywheel.config.section import Section, check_device

Backend = Literal["torch", "int8", "onnx", "onnx-int8"]
"""What runs a served model's network (``serve.backend``); see :mod:`dataflywheel.export`."""
ONNX_BACKENDS: tuple[Backend, ...] = ("onnx", "onnx-int8")
"""The backends that run an ONNX export on onnxruntime."""


CompletionKind = Literal["thumbs", "rating", "correction", "choice"]
TRAINED_COMPLETION_KINDS: tuple[CompletionKind, ...] = ("thumbs", "rating", "correction", "choice")
"""The kinds of feedback on completions a generation model learns from (a ``comment`` teaches nothing)."""


class CompletionFeedbackConfig(Section):
    """Generation models: which feedback on completions the next dataset version learns from
    (:mod:`dataflywheel.feedback.completion_set`)."""

    kinds: list[CompletionKind] = Field(default_factory=lambda: list(TRAINED_COMPLETION_KINDS))
    """Kinds used; rows of other kinds stay pending (a later config may use them)."""
    min_rating: int = Field(4, ge=1, le=5)
    """A rating from this up accepts the answer (an SFT row and a good label)."""
    bad_rating: int = Field(2, ge=1, le=5)
    """A rating up to this marks the answer bad (a bad label)."""

    @model_validator(mode="after")
    def _ratings(self) -> CompletionFeedbackConfig:
        if self.bad_rating >= self.min_rating:
            raise ValueError(f"bad_rating ({self.bad_rating}) must be below min_rating ({self.min_rating})")
        return self


class RetrainConfig(Section):
    """When the loop retrains by itself (``flywheel serve --auto-retrain``), and what a
    generation model's next version learns from."""

    every_n_labels: int | None = Field(50, ge=1)
    """Retrain after this many new labelled feedback rows; null disables."""
    drift_threshold: float | None = Field(None, gt=0)
    """Retrain when any feature's PSI over recent inputs exceeds this; null disables."""
    poll_seconds: float = Field(5.0, gt=0)
    """How often the retrain worker checks the trigger."""
    feedback: CompletionFeedbackConfig = CompletionFeedbackConfig()
    method: Literal["sft", "dpo", "sft+dpo"] | None = None
    """How a retrain trains the challenger (``train.method`` for ``flywheel retrain`` and the
    retrain worker; null: ``train.method``). A generation project's first version is learned with
    ``sft`` and the versions after it tuned on feedback with ``dpo``."""


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


class GenerationServeConfig(Section):
    """How a generation model is served (``serve.generation``): the limits a request may ask
    for and the continuously batched engine's KV cache and step budget."""

    max_tokens: int = Field(512, ge=1)
    """The most new tokens a request may ask for (``max_tokens`` above it is a 400)."""
    default_max_tokens: int = Field(256, ge=1)
    """New tokens when a request names no limit (bounded by what the context leaves)."""
    cache_tokens: int = Field(16384, ge=16)
    """KV cache capacity in tokens, all running sequences together; requests beyond it wait."""
    page_tokens: int = Field(32, ge=1)
    """Tokens per KV cache page."""
    max_batch_tokens: int = Field(256, ge=8)
    """Tokens one engine step processes at most when no sequence is decoding (prompts of a burst
    of new requests, read in chunks this big)."""
    decode_step_tokens: int = Field(48, ge=2)
    """Tokens a step processes at most while sequences are decoding: a token per running sequence
    plus a chunk of a waiting prompt. Smaller keeps running streams smooth while a long prompt is
    read (on a CPU a step costs about as much as the tokens in it); larger reads it faster."""
    max_sequences: int = Field(32, ge=1)
    """Sequences decoded together at most."""
    seed: int = 0
    """The sampler's seed (one per server: sequences sampled in one batch share a generator)."""


class ServeConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_batch_size: int = Field(64, ge=1)
    """Most records in one forward pass."""
    max_wait_ms: float = Field(0.0, ge=0)
    """How long a batch that already has company waits for more (0: it takes what is queued and
    goes; under load requests queue while a forward pass runs, so batches form by themselves)."""
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
    generation: GenerationServeConfig = GenerationServeConfig()
    """Generation models only: request limits and the continuously batched engine."""

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
