"""OpenAI's completion endpoints over the continuously batched engine, every completion logged.

:class:`Completions` answers ``POST /v1/chat/completions`` (``messages`` through the chat
template) and ``POST /v1/completions`` (a raw ``prompt``), streamed as Server-Sent Events or
whole, with ``n`` choices per request (``n`` sequences in the engine, decoded side by side).
Each choice's tokens go through a :class:`~dataflywheel.serve.llm.text_stream.TextStream`
(whole characters only, stop strings held back and never sent); a matched stop string cancels
its sequence in the engine at once, and so does a client that goes away mid-stream.

Logging: a response is one row of the prediction log; the response ``id`` is its id (the one id
space feedback names a completion by). The row holds the redacted prompt and the request's
decoding settings (``input``), the choices with their finish reasons, the token counts and the
time to the first token (``output``), the model version and the latency. With ``log_mode: sync``
the answer (or a stream's ``data: [DONE]``) is sent only after the row is committed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from dataflywheel.feedback.log import LogWriter, new_ids
from dataflywheel.serve.engine import EngineRequest
from dataflywheel.serve.llm.engine import ContinuousBatchEngine, Generated, Sampling
from dataflywheel.serve.llm.generator import ServedGenerator
from dataflywheel.serve.llm.metrics import GenerationMetrics
from dataflywheel.serve.llm.protocol import ChatRequest, CompletionRequest, OpenAIError, parse_request
from dataflywheel.serve.llm.text_stream import TextStream
from dataflywheel.serve.pipeline import RequestCancelled
from dataflywheel.store.metadata import utcnow
from dataflywheel.workers import on_loop

Kind = Literal["chat", "text"]
MAX_SEQUENCES = 64
"""Sequences (prompts x ``n``) one request may ask for."""


@dataclass
class Choice:
    """One sequence's outcome."""

    index: int
    text: str = ""
    finish_reason: str | None = None
    tokens: int = 0


@dataclass(frozen=True)
class Serving:
    """The served generation model and the engine that runs it: swapped together."""

    generator: ServedGenerator
    engine: ContinuousBatchEngine


@dataclass(frozen=True, slots=True)
class Step:
    """A piece of one choice: its new text, and at its end why it finished and its token count."""

    index: int
    text: str
    finish_reason: str | None = None
    tokens: int = 0


@dataclass
class Prepared:
    """A parsed, checked request: one prompt per ``prompt_ids`` entry, ``n`` choices each."""

    kind: Kind
    request: ChatRequest | CompletionRequest
    generator: ServedGenerator
    engine: ContinuousBatchEngine
    prompt_ids: list[list[int]]
    logged_input: dict[str, Any]
    sampling: Sampling
    id: str
    created: int
    started: float
    first_token: float | None = None
    """``time.perf_counter()`` at the request's first generated text."""

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_token is None else (self.first_token - self.started) * 1000.0


class Completions:
    """The two completion endpoints (module docstring). ``serving`` is the served model and its
    engine (a hot swap assigns a new pair; a request runs to its end on the pair it arrived with)."""

    def __init__(self, generator: ServedGenerator, engine: ContinuousBatchEngine, writer: LogWriter, *,
                 log_mode: Literal["sync", "async"] = "sync", metrics: GenerationMetrics | None = None) -> None:
        self.serving = Serving(generator, engine)
        self.writer = writer
        self.log_mode = log_mode
        self.metrics = metrics or GenerationMetrics(lambda: self.serving.engine.scheduled())
        self.tokens_generated = 0

    @property
    def generator(self) -> ServedGenerator:
        return self.serving.generator

    @generator.setter
    def generator(self, generator: ServedGenerator) -> None:
        self.serving = Serving(generator, self.serving.engine)

    @property
    def engine(self) -> ContinuousBatchEngine:
        return self.serving.engine

    # -- parse and check ---------------------------------------------------------------------------
    def prepare(self, kind: Kind, body: bytes) -> Prepared:
        started = time.perf_counter()
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise OpenAIError(400, f"the body is not valid JSON: {exc}") from None
        request = parse_request(ChatRequest if kind == "chat" else CompletionRequest, payload)
        serving = self.serving  # read once: this request runs on this model to the end
        gen = serving.generator
        if request.model is not None and request.model not in self.names(gen):
            raise OpenAIError(404, f"the model {request.model!r} does not exist here; this server serves "
                              f"{gen.name!r} (GET /v1/models)", param="model", code="model_not_found")
        if isinstance(request, ChatRequest):
            contents, counts = gen.redact([m.content for m in request.messages])
            messages = [m.model_copy(update={"content": c}) for m, c in zip(request.messages, contents, strict=True)]
            prompts = [gen.chat_ids(messages)]
            logged: dict[str, Any] = {"messages": [m.model_dump() for m in messages]}
        else:
            texts, counts = gen.redact(request.prompts)
            prompts = [gen.prompt_ids(t) for t in texts]
            logged = {"prompt": texts[0] if isinstance(request.prompt, str) else texts}
        for pii, n in counts.items():
            self.metrics.redactions.labels(pii).inc(n)
        if any(not ids for ids in prompts):
            raise OpenAIError(400, "a prompt is empty: it has no tokens to continue", param="prompt")
        if len(prompts) * request.n > MAX_SEQUENCES:
            raise OpenAIError(400, f"{len(prompts)} prompt(s) x n={request.n} asks for more than {MAX_SEQUENCES} "
                              "sequences in one request", param="n", code="invalid_value")
        param = "max_completion_tokens" if getattr(request, "max_completion_tokens", None) else "max_tokens"
        budget = min(gen.budget(len(p), request.token_limit, param) for p in prompts)
        sampling = Sampling(budget, request.temperature, request.top_p)
        logged |= {"max_tokens": budget, "temperature": request.temperature, "top_p": request.top_p,
                   "n": request.n, "stop": request.stops}
        return Prepared(kind, request, gen, serving.engine, prompts, logged, sampling, new_ids(1)[0], int(time.time()),
                        started)

    @staticmethod
    def names(gen: ServedGenerator) -> set[str]:
        names = {gen.name, *gen.aliases}
        if gen.version is not None:
            names |= {str(gen.version), f"v{gen.version}"}
        return names

    # -- generate ----------------------------------------------------------------------------------
    async def events(self, p: Prepared) -> AsyncIterator[Step]:
        """The choices' :class:`Step` s as they generate, ending with one step per choice whose
        ``finish_reason`` is set. Leaving early (a client gone) cancels every sequence."""
        queue: asyncio.Queue[Step | BaseException] = asyncio.Queue()
        choices = [(i * p.request.n + j, ids) for i, ids in enumerate(p.prompt_ids) for j in range(p.request.n)]
        tasks = [asyncio.create_task(self._choice(index, ids, p, queue)) for index, ids in choices]
        try:
            remaining = len(tasks)
            while remaining:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item.finish_reason is not None:
                    remaining -= 1
                yield item
        finally:
            for t in tasks:
                t.cancel()

    async def _choice(self, index: int, prompt: list[int], p: Prepared, out: asyncio.Queue[Step | BaseException],
                      ) -> None:
        request = EngineRequest(p.generator, [{"prompt_ids": prompt}], options={"sampling": p.sampling})
        text = TextStream(p.generator.tokenizer, p.request.stops)
        m = self.metrics
        last = 0.0
        try:
            async for event in p.engine.submit(request):
                if event.kind == "delta":
                    now = time.perf_counter()
                    if last:
                        m.inter_token.observe(now - last)
                    last = now
                    if p.first_token is None:
                        p.first_token = now
                        m.ttft.observe(now - p.started)
                    self.tokens_generated += len(event.data)
                    m.tokens.inc(len(event.data))
                    piece = text.push(event.data)
                    if text.stopped:  # a stop string: the sequence is cancelled below
                        out.put_nowait(Step(index, piece, "stop", len(text.ids)))
                        return
                    if piece:
                        out.put_nowait(Step(index, piece))
                elif event.kind == "final":
                    result: Generated = event.data
                    out.put_nowait(Step(index, text.flush(), result.finish_reason, len(result.tokens)))
                    return
                else:
                    raise event.data
            raise RequestCancelled("the sequence was cancelled before it finished", where="the generation engine")
        except Exception as exc:  # noqa: BLE001 - handed to the request's reader
            out.put_nowait(exc)
        finally:
            p.engine.cancel(request.id)  # a no-op for a sequence that finished

    async def collect(self, p: Prepared) -> list[Choice]:
        """Every choice whole."""
        choices = [Choice(i) for i in range(len(p.prompt_ids) * p.request.n)]
        async for step in self.events(p):
            c = choices[step.index]
            c.text += step.text
            if step.finish_reason is not None:
                c.finish_reason, c.tokens = step.finish_reason, step.tokens
        return choices

    # -- answers -------------------------------------------------------------------------------------
    async def answer(self, p: Prepared) -> bytes:
        """The whole response (``stream: false``), sent once its row is logged."""
        choices = await self.collect(p)
        await self.log(p, choices)
        if p.kind == "chat":
            body: list[dict[str, Any]] = [
                {"index": c.index, "message": {"role": "assistant", "content": c.text},
                 "finish_reason": c.finish_reason, "logprobs": None} for c in choices]
        else:
            body = [{"index": c.index, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None}
                    for c in choices]
        return orjson.dumps({"id": p.id, "object": "chat.completion" if p.kind == "chat" else "text_completion",
                             "created": p.created, "model": p.generator.name, "choices": body,
                             "usage": self.usage(p, choices)})

    async def stream(self, p: Prepared) -> AsyncIterator[bytes]:
        """Server-Sent Events: a chunk per text delta per choice, each choice's finish reason,
        the usage chunk when asked (``stream_options.include_usage``), then ``data: [DONE]``
        once the row is logged."""
        obj = "chat.completion.chunk" if p.kind == "chat" else "text_completion"
        usage = p.request.stream_options is not None and p.request.stream_options.include_usage
        head = {"id": p.id, "object": obj, "created": p.created, "model": p.generator.name}
        extra = {"usage": None} if usage else {}
        choices = [Choice(i) for i in range(len(p.prompt_ids) * p.request.n)]
        if p.kind == "chat":
            for c in choices:
                delta = {"index": c.index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                yield _event(head | {"choices": [delta]} | extra)
        async for step in self.events(p):
            c = choices[step.index]
            c.text += step.text
            if step.finish_reason is not None:
                c.finish_reason, c.tokens = step.finish_reason, step.tokens
            if step.text or step.finish_reason is not None:
                if p.kind == "chat":
                    delta = {"index": c.index, "delta": {"content": step.text} if step.text else {},
                             "finish_reason": step.finish_reason}
                else:
                    delta = {"index": c.index, "text": step.text, "finish_reason": step.finish_reason,
                             "logprobs": None}
                yield _event(head | {"choices": [delta]} | extra)
        await self.log(p, choices)
        if usage:
            yield _event(head | {"choices": [], "usage": self.usage(p, choices)})
        yield b"data: [DONE]\n\n"

    @staticmethod
    def usage(p: Prepared, choices: list[Choice]) -> dict[str, int]:
        prompt = sum(len(ids) for ids in p.prompt_ids)
        completion = sum(c.tokens for c in choices)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    # -- log -----------------------------------------------------------------------------------------
    async def log(self, p: Prepared, choices: list[Choice]) -> None:
        usage = self.usage(p, choices)
        output = {"choices": [{"index": c.index, "text": c.text, "finish_reason": c.finish_reason,
                               "completion_tokens": c.tokens} for c in choices],
                  "prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
                  "ttft_ms": p.ttft_ms, "kind": p.kind}
        row = {"id": p.id, "created_at": utcnow(), "model_version": p.generator.version, "input": p.logged_input,
               "output": output, "latency_ms": (time.perf_counter() - p.started) * 1000.0}
        if self.log_mode == "sync":
            await on_loop(lambda done: self.writer.submit_rows([row], done))
        else:
            self.writer.submit_rows([row], lambda _v, _e: None)


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"
