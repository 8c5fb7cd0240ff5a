"""The ``model``, ``train`` and ``evaluate`` sections: what is built, how it is fitted, and the
promotion gate it must pass."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from dataflywheel.config.section import Section, check_device


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


class DpoConfig(Section):
    """The DPO phase of ``train.method: dpo`` or ``sft+dpo`` (:mod:`dataflywheel.train.preference`);
    a field left null takes the ``train`` section's value."""

    beta: float = Field(0.1, gt=0)
    """How far the policy may move from the reference (larger: closer to it)."""
    epochs: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    batch_size: int | None = Field(None, ge=1)
    """Pairs per mini-batch (each pair is two sequences in one forward)."""


class TrainConfig(Section):
    method: Literal["sft", "dpo", "sft+dpo"] = "sft"
    """Generation models: ``sft`` learns the completions; ``dpo`` tunes the champion on the
    dataset's preference pairs (the champion is the reference); ``sft+dpo`` learns the
    completions, then tunes that model on the pairs (it is the reference). Other tasks: sft."""
    dpo: DpoConfig = Field(default_factory=DpoConfig)
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(32, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    loss: Literal["auto", "bce", "cross_entropy", "mse", "sft"] = "auto"
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
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of keeping them (less memory, about a
    third more compute); for models that support it (causal_lm)."""

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return check_device(v)


class AnswersConfig(Section):
    """Generation models: answers generated (greedy) on the test prompts and scored against the
    references (``exact_match``, ``rouge_l``). Generation on a CPU is slow: the prompts are capped."""

    max_prompts: int = Field(32, ge=0)
    """Test prompts answered (the first ones, in the split's order); 0 turns the answer metrics off."""
    max_new_tokens: int = Field(48, ge=1)
    """New tokens per answer at most."""
    threads: int | None = Field(None, ge=1)
    """torch threads while the answers are generated (null: as training left them). Decoding runs
    many small steps, each a barrier for every thread: on a CPU shared with other work, one thread
    can decode several times faster than two."""


class JudgeConfig(Section):
    """Generation models: who decides which of two answers is better (``win_rate``,
    :mod:`dataflywheel.evaluate.judges`)."""

    type: str = "reference"
    """``reference`` (ROUGE-L against the reference decides) or ``llm`` (a language model, asked
    in both orders)."""
    url: str | None = None
    """``llm``: an OpenAI-compatible base URL (``http://127.0.0.1:8000/v1``)."""
    name: str | None = None
    """``llm`` with ``url``: the ``model`` to name in the requests."""
    model: str | None = None
    """``llm``: a local causal LM folder (with a chat template) instead of an endpoint."""
    api_key_env: str | None = None
    """``llm`` with ``url``: the environment variable holding the bearer key."""
    timeout_seconds: float = Field(60.0, gt=0)


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
    answers: AnswersConfig = AnswersConfig()
    """Generation models only: the answers scored on the test prompts."""
    judge: JudgeConfig = JudgeConfig()
    """Generation models only: the judge of the challenger's answers against the champion's."""
    compare_base: bool = True
    """The first version of a model on a pretrained base whose task compares with it (generation)
    is also scored with its base, on the same rows: the report shows both, with paired bootstrap
    95 % intervals of the differences (per-item scores, e.g. each answer's ROUGE-L). It costs a
    second evaluation (a generation model answers the prompts again); false skips it."""
