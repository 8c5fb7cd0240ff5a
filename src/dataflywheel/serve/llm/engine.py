"""The continuously batched generation engine: transformers' continuous batching behind the
server's :class:`~dataflywheel.serve.engine.Engine` interface.

:class:`ContinuousBatchEngine` wraps ``transformers``' ``ContinuousBatchingManager`` (a paged KV
cache, a scheduler that admits new sequences into the running decode batch at every step and
retires finished ones, prompts prefilled in chunks of ``max_batch_tokens`` so a long prompt does
not stall running streams for more than a step). It runs the model on the manager's own thread;
each step's new tokens come back to the event loop (``register_result_handler``: one
``call_soon_threadsafe`` per request per step) and are pushed into the request's
:class:`~dataflywheel.serve.engine.EventStream` as a ``delta`` (the new token ids); the last
event is ``final`` with a :class:`Generated`. ``cancel`` (a stop string matched, the client went
away) stops the sequence at the next step and frees its cache pages.

Sampling is per request (``temperature``, ``top_p``; the manager is built with per-request
processors). Temperature 0 (greedy) is run as temperature :data:`GREEDY_TEMPERATURE`: the
manager samples every sequence of a batch the same way, and at that temperature the most likely
token's probability is 1 to float precision unless two logits are within ~1e-3 of each other.
``seed`` is the manager's, one per engine (the batch shares one random generator), so a request's
``seed`` does not make its sample repeatable; OpenAI documents its own as best effort too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import torch

from dataflywheel.config.serving import GenerationServeConfig
from dataflywheel.errors import FlywheelError
from dataflywheel.serve.engine import EngineRequest, EventStream

GREEDY_TEMPERATURE = 1e-4


class GenerationFailed(FlywheelError):
    """The model failed on a sequence (the manager reported an error for it)."""


@dataclass(frozen=True)
class CacheSettings:
    """The KV cache and the scheduler's budget (``serve.generation``)."""

    cache_tokens: int = 16384
    """KV cache capacity in tokens, all running sequences together; requests beyond it wait."""
    page_tokens: int = 32
    """Tokens per cache page (the allocation unit)."""
    max_batch_tokens: int = 256
    """Tokens one step processes at most: prompt tokens when no sequence is decoding (a burst of
    new requests is read fast)."""
    decode_step_tokens: int = 48
    """Tokens a step processes at most while sequences are decoding: their next tokens plus a
    chunk of a waiting prompt, so a long prompt being read stalls no running stream much."""
    max_sequences: int = 32
    """Sequences decoded together at most."""
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: GenerationServeConfig) -> CacheSettings:
        return cls(cfg.cache_tokens, cfg.page_tokens, cfg.max_batch_tokens, cfg.decode_step_tokens,
                   cfg.max_sequences, cfg.seed)


@dataclass(frozen=True)
class Sampling:
    """One sequence's decoding: ``max_tokens`` new tokens at most, ``temperature`` 0 = greedy."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass(frozen=True)
class Generated:
    """A finished sequence: its new token ids and why it ended (``stop``: an end-of-turn token,
    ``length``: ``max_tokens`` reached)."""

    tokens: list[int]
    finish_reason: str
    prompt_tokens: int


class ContinuousBatchEngine:
    """Generation requests through one continuously batched model (module docstring).

    A request's ``records`` hold one ``{"prompt_ids": [...]}``; its ``options`` hold
    ``sampling`` (a :class:`Sampling`). ``eos_ids`` end a sequence (the chat template's
    end-of-turn token and the model's end-of-sequence token).
    """

    def __init__(self, model: Any, eos_ids: Sequence[int], settings: CacheSettings | None = None) -> None:
        self.model = model
        self.eos_ids = list(dict.fromkeys(eos_ids))
        self.settings = settings or CacheSettings()
        self.manager: Any = None
        self._inflight: dict[str, EventStream] = {}
        self._first_pending: set[str] = set()
        self.waiting = 0
        """Requests admitted but not yet given their first token."""
        self.finished = 0
        """Sequences that ran to an end-of-turn token or their ``max_tokens``."""
        self.cancelled = 0
        """Sequences stopped before their end (a stop string, a client gone)."""

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Self:
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        s = self.settings
        # temperature and top_p away from their neutral values so that their per-request
        # processors exist; every request then passes its own.
        config = GenerationConfig(do_sample=True, temperature=0.5, top_p=0.5,  # type: ignore[no-untyped-call]
                                  eos_token_id=self.eos_ids, max_new_tokens=256)
        cb = ContinuousBatchingConfig(page_size=s.page_tokens, num_blocks=max(1, -(-s.cache_tokens // s.page_tokens)),
                                      max_batch_tokens=max(s.max_batch_tokens, s.decode_step_tokens),
                                      max_requests_per_batch=s.max_sequences, per_request_processors=True,
                                      seed=s.seed, use_cuda_graph=False,
                                      scheduler_type=smooth_scheduler(s.decode_step_tokens))
        self.manager = self.model.init_continuous_batching(generation_config=config, continuous_batching_config=cb)
        _nucleus_only_when_asked(self.manager)
        self.manager.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        if self.manager is not None:
            self.manager.stop(block=True, timeout=timeout)
            self.model.destroy_cached_continuous_batching_manager()
            self.manager = None

    @property
    def alive(self) -> bool:
        return self.manager is not None and bool(self.manager.is_running())

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {"continuous_batching": True, "cache_tokens": s.cache_tokens, "page_tokens": s.page_tokens,
                "max_batch_tokens": s.max_batch_tokens, "max_sequences": s.max_sequences}

    @property
    def in_flight(self) -> int:
        """Sequences submitted and not yet ended."""
        return len(self._inflight)

    # -- requests (on the event loop) ------------------------------------------------------------
    def submit(self, request: EngineRequest) -> EventStream:
        rid = request.id
        inflight = self._inflight
        stream = EventStream(request.finish, lambda: self._forget(rid))
        prompt: list[int] = list(request.records[0]["prompt_ids"])
        sampling: Sampling = (request.options or {})["sampling"]
        eos = set(self.eos_ids)
        sent = 0

        def on_output(out: Any) -> None:
            nonlocal sent
            if stream.ended:
                return
            if out.error:
                stream.error(GenerationFailed(f"generation failed: {out.error}", where="the generation engine"))
                return
            tokens = out.generated_tokens
            if sent == 0 and tokens and rid in self._first_pending:
                self._first_pending.discard(rid)
                self.waiting -= 1
            if len(tokens) > sent:
                stream.delta(tokens[sent:])
                sent = len(tokens)
            if out.is_finished():
                ended_on_eos = bool(tokens) and tokens[-1] in eos
                reason = "length" if len(tokens) >= sampling.max_tokens and not ended_on_eos else "stop"
                self.finished += 1
                stream.final(Generated(list(tokens), reason, len(prompt)))

        inflight[rid] = stream
        self._first_pending.add(rid)
        self.waiting += 1
        self.manager.register_result_handler(rid, on_output)
        temperature = sampling.temperature if sampling.temperature > 0 else GREEDY_TEMPERATURE
        added = self.manager.add_request(prompt, request_id=rid, max_new_tokens=sampling.max_tokens, streaming=True,
                                         eos_token_id=self.eos_ids, temperature=float(temperature),
                                         top_p=float(sampling.top_p))
        if added is None:  # the manager is stopping
            stream.error(GenerationFailed("the generation engine is not accepting requests",
                                          where="the generation engine", fix="retry in a moment"))
        return stream

    def cancel(self, request_id: str) -> bool:
        stream = self._inflight.get(request_id)
        if stream is None:
            return False
        self.manager.cancel_request(request_id)
        stream.cancel()
        self.cancelled += 1
        return True

    def scheduled(self) -> tuple[int, int, float]:
        """(sequences decoding, sequences waiting for the cache, share of the KV cache in use), as
        the manager's scheduler sees them now."""
        processor = getattr(self.manager, "batch_processor", None)
        if processor is None:
            return 0, 0, 0.0
        scheduler = processor.scheduler
        used = 1.0 - float(processor.cache.compute_free_capacity(relative=True))
        return len(scheduler.active_requests), len(scheduler.waiting_requests), used

    def _forget(self, rid: str) -> None:
        self._inflight.pop(rid, None)
        if rid in self._first_pending:
            self._first_pending.discard(rid)
            self.waiting -= 1
        handlers = getattr(getattr(self.manager, "output_router", None), "result_handlers", None)
        if handlers is not None:  # a cancelled sequence gets no final output to clean its handler up
            handlers.pop(rid, None)


def _nucleus_only_when_asked(manager: Any) -> None:
    """Skip the per-request top-p filter in a step where no sequence asked for one (``top_p`` 1,
    OpenAI's default): it sorts the whole vocabulary of every sequence, a tenth of a decode step
    of SmolLM2 at 8 sequences on a CPU."""
    from transformers.generation.continuous_batching.cb_logits_processors import (
        ContinuousBatchingTopPLogitsWarper,
    )

    class NucleusWhenAsked(ContinuousBatchingTopPLogitsWarper):
        def __call__(self, scores: Any, tensor_arg: Any) -> Any:
            top_p = tensor_arg[: scores.size(0)].view(dtype=torch.float32)
            if bool((top_p >= 1.0).all()):
                return scores
            return super().__call__(scores, tensor_arg)

    processors = getattr(getattr(manager, "logit_processor", None), "logits_processor", None)
    for proc in processors or []:
        if type(proc) is ContinuousBatchingTopPLogitsWarper:
            proc.__class__ = NucleusWhenAsked


def smooth_scheduler(decode_step_tokens: int) -> str:
    """The name, in transformers' scheduler registry, of a FIFO scheduler whose steps take at most
    ``decode_step_tokens`` tokens while any sequence is decoding (prefill chunks then stay small
    beside the decode tokens) and the full budget when none is (a burst of prompts is read in big
    chunks). The library's own FIFO scheduler takes one budget for both."""
    from transformers.generation.continuous_batching.requests import RequestStatus
    from transformers.generation.continuous_batching.scheduler import SCHEDULER_MAPPING, FIFOScheduler

    name = f"dataflywheel-smooth-{decode_step_tokens}"
    if name not in SCHEDULER_MAPPING:
        class SmoothScheduler(FIFOScheduler):
            def schedule_batch(self, token_budget: int, cache_budget: int) -> Any:
                decoding = any(s.status == RequestStatus.DECODING for s in self.active_requests.values())
                budget = min(token_budget, decode_step_tokens) if decoding else token_budget
                return super().schedule_batch(budget, cache_budget)

        SCHEDULER_MAPPING[name] = SmoothScheduler
    return name
