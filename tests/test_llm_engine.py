"""The continuously batched engine on a tiny Llama: greedy equals ``model.generate``, a long
prompt's prefill is chunked so running streams keep stepping, requests beyond the cache wait."""

from __future__ import annotations

import asyncio
from typing import Any

import torch

from dataflywheel.serve.engine import EngineRequest
from dataflywheel.serve.llm.engine import CacheSettings, ContinuousBatchEngine, Sampling

from llm_helpers import tiny_llama, tiny_tokenizer


def run(engine: ContinuousBatchEngine, prompt: list[int], sampling: Sampling, log: list[Any], name: str) -> Any:
    async def go() -> list[int]:
        tokens: list[int] = []
        async for event in engine.submit(EngineRequest(None, [{"prompt_ids": prompt}], {"sampling": sampling})):
            if event.kind == "delta":
                tokens += event.data
                log.append((name, len(tokens)))
            elif event.kind == "error":
                raise event.data
        return tokens
    return go()


def test_concurrent_greedy_sequences_equal_model_generate_and_a_long_prefill_is_chunked() -> None:
    tok = tiny_tokenizer()
    model = tiny_llama(len(tok))
    short = [tok(t).input_ids for t in ("the cat", "a dog ran", "what is")]
    long = tok(" ".join(["the quick brown fox"] * 40)).input_ids[:180]
    engine = ContinuousBatchEngine(model, [-1], CacheSettings(cache_tokens=1024, page_tokens=16, max_batch_tokens=256,
                                                                    decode_step_tokens=24))
    engine.start()
    log: list[Any] = []
    submitted = 0

    async def main() -> list[list[int]]:
        running = [asyncio.ensure_future(run(engine, p, Sampling(40, 0.0), log, f"s{i}")) for i, p in enumerate(short)]
        while len({n for n, _ in log}) < len(short):  # every short stream is decoding
            await asyncio.sleep(0.001)
        nonlocal submitted
        submitted = len(log)
        late = asyncio.ensure_future(run(engine, long, Sampling(4, 0.0), log, "long"))
        return list(await asyncio.gather(*running, late))

    try:
        results = asyncio.run(main())
    finally:
        engine.close()
    for prompt, got in zip([*short, long], results, strict=True):
        want = model.generate(torch.tensor([prompt]), max_new_tokens=len(got), do_sample=False)[0, len(prompt):]
        assert got == want.tolist()
    first_long = next(i for i, (n, _) in enumerate(log) if n == "long")
    steps_during_prefill = sum(1 for n, _ in log[submitted:first_long] if n == "s0")
    # 180 prompt tokens at <= 24 tokens a step while the others decode (3 of them decode tokens; the
    # 256-token budget is for steps with nothing decoding): at least 8 steps of prefill,
    # each giving every running stream its next token.
    assert steps_during_prefill >= 6, log[:first_long]
    assert engine.finished == 4 and engine.scheduled()[:2] == (0, 0)


def test_top_p_filters_when_asked_and_sampling_samples() -> None:
    tok = tiny_tokenizer()
    model = tiny_llama(len(tok), seed=3)
    prompt = tok("the cat sat").input_ids
    engine = ContinuousBatchEngine(model, [-1], CacheSettings(cache_tokens=1024, page_tokens=16)).start()
    log: list[Any] = []

    async def many(sampling: Sampling, k: int) -> list[list[int]]:
        return list(await asyncio.gather(*(run(engine, prompt, sampling, log, str(i)) for i in range(k))))

    try:
        greedy = asyncio.run(many(Sampling(12, 0.0), 1))[0]
        nucleus = asyncio.run(many(Sampling(12, 1.0, top_p=1e-6), 4))  # a nucleus of one token: greedy
        sampled = asyncio.run(many(Sampling(12, 1.5, top_p=1.0), 4))
    finally:
        engine.close()
    assert all(s == greedy for s in nucleus)
    assert any(s != greedy for s in sampled)


def test_a_short_request_joins_the_running_batch_and_ends_first() -> None:
    """A short request arriving while long ones decode is admitted at the next step and
    finishes long before them (no waiting for the batch to drain)."""
    tok = tiny_tokenizer()
    engine = ContinuousBatchEngine(tiny_llama(len(tok)), [-1], CacheSettings(cache_tokens=1024, page_tokens=16))
    engine.start()
    log: list[Any] = []

    async def main() -> None:
        longs = [asyncio.ensure_future(run(engine, tok(f"the cat {i}").input_ids, Sampling(60, 1.0), log, f"long{i}"))
                 for i in range(3)]
        while len({n for n, _ in log}) < 3:
            await asyncio.sleep(0.001)
        await run(engine, tok("a dog").input_ids, Sampling(3, 1.0), log, "short")
        await asyncio.gather(*longs)

    try:
        asyncio.run(main())
    finally:
        engine.close()
    short_done = max(i for i, (n, _) in enumerate(log) if n == "short")
    assert [k for n, k in log if n == "short"] == [1, 2, 3]
    for i in range(3):
        steps = [k for n, k in log[:short_done] if n == f"long{i}"]
        assert steps and max(steps) < 60  # every long stream was mid-way when the short one ended
