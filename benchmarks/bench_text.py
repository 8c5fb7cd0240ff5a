"""Text benchmark: all-MiniLM-L6-v2 on BBC News, one run, everything side by side.

1. Fine-tuning examples/s, LoRA (r 8 on query/value, plus pooler and classifier), same model,
   data, batch size, sequence length, optimiser and thread count: our `fit()` versus Hugging
   Face `Trainer` (dynamic padding by `DataCollatorWithPadding`). Target: ratio >= 1.0.
2. Inference rows/s of the fine-tuned classifier (a bundle, raw text in, tokenisation included)
   in fp32 torch (the Hugging Face forward), int8 dynamic quantisation in torch, and ONNX Runtime
   in fp32 and int8, with the macro-F1 of each on the test split and each one's peak memory.
   The last three run the bundle's inference network (the last layer for the first token
   alone; see dataflywheel.export.first_token). Target: the best >= 2x fp32.
3. Served texts/s at concurrency 16 (wrk, 127.0.0.1): `flywheel serve` (micro-batched, every
   prediction logged) versus what a user writes instead: a hand-written FastAPI endpoint over
   `AutoTokenizer` + `AutoModelForSequenceClassification` (the fine-tuned LoRA adapters loaded
   with peft and merged), one text per forward pass, no logging. Target: >= 3x.

Every measurement runs in its own process, so each peak RSS (ru_maxrss) is its own; the
processes run one at a time and alternate between ours and the baseline.

    python benchmarks/bench_text.py                  # builds a small LoRA bundle first (~2 min)
    python benchmarks/bench_text.py --project examples/bbc-news   # its champion (after flywheel run)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from bench_serve import free_port, median_run, start, stop, wait_ready, wrk  # noqa: E402

HAND_APP = '''
"""What a user writes instead of `flywheel serve`: the Hugging Face classifier behind FastAPI."""
import json
import os
from pathlib import Path

import torch
from fastapi import FastAPI
from peft import PeftModel
from pydantic import BaseModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

torch.set_num_threads(int(os.environ.get("THREADS", "1")))
bundle, base = Path(os.environ["BUNDLE"]), os.environ["BASE"]
max_length = int(os.environ["MAX_LENGTH"])
labels = json.loads((bundle / "model.json").read_text())["target_encoder"]["state"]["classes_"]
tokenizer = AutoTokenizer.from_pretrained(base)
model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=len(labels))
model = PeftModel.from_pretrained(model, bundle).merge_and_unload().eval()
app = FastAPI()


class Text(BaseModel):
    text: str


@app.post("/predict")
async def predict(body: Text) -> dict:
    inputs = tokenizer(body.text, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        probs = model(**inputs).logits.softmax(-1)[0].tolist()
    return {"prediction": labels[max(range(len(labels)), key=probs.__getitem__)],
            "probabilities": dict(zip(labels, probs))}
'''

BIN = Path(sys.executable).parent
BACKENDS = ("torch", "int8", "onnx", "onnx-int8")
LORA = {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["query", "value"]}

PROJECT_YAML = """\
project: bench-text
data:
  source: bbc.csv
  target: topic
  features: [{{name: text, type: text, max_length: {max_length}}}]
  split: {{train: 0.6, valid: 0.1, test: 0.3, seed: 42}}
model:
  type: pretrained
  params: {{base: minilm, finetune: lora, lora: {lora}}}
train: {{epochs: 2, batch_size: 16, optimizer: adamw, lr: 0.002, schedule: {{warmup_steps: 5, decay: linear}},
        seed: 0, threads: {threads}, early_stopping: null}}
evaluate: {{metric: macro_f1}}
serve: {{backend: torch, max_batch_size: 32, max_wait_ms: 5}}
"""


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- workers (one per process)

def train_data(rows: int, max_length: int) -> tuple[Any, ...]:
    """The first ``rows`` BBC articles (round-robin over topics) as our encoded batch and as
    Hugging Face features, tokenised by the same MiniLM tokenizer."""
    import polars as pl

    from dataflywheel.data.bbc import bbc_frame, minilm_folder
    from dataflywheel.features.preprocessor import Preprocessor
    from dataflywheel.features.target import TargetEncoder
    from dataflywheel.train.stage import encode

    df = bbc_frame()
    df = df.with_columns(pl.int_range(pl.len()).over("topic").alias("k")).sort("k", "topic").head(rows).drop("k")
    base = minilm_folder()
    pre = Preprocessor([], text_features=[("text", {"tokenizer": str(base), "max_length": max_length})]).fit(df)
    target = TargetEncoder("multiclass").fit(df.get_column("topic"))
    batch = encode(pre, target, df, "topic", "multiclass")[0]
    return df, pre, target, batch, base


def lora_model(pre: Any, base: Path, max_length: int, n_outputs: int) -> Any:
    from dataflywheel.models.pretrained import content_hash
    from dataflywheel.models.registry import build_model, model_spec

    spec = model_spec("pretrained", n_numeric=0, cardinalities=[], n_outputs=n_outputs, task="multiclass",
                      text_vocab_size=pre.text_encoder_.vocab_size_, max_length=max_length, base=str(base),
                      base_hash=content_hash(base), finetune="lora", lora=LORA)
    return build_model(spec, seed=0)


def worker_train(which: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from dataflywheel.runtime import set_threads

    set_threads(args.threads, 0)
    df, pre, target, batch, base = train_data(args.train_rows, args.max_length)
    model = lora_model(pre, base, args.max_length, len(target.classes_))
    steps, size = args.train_steps, args.batch_size
    tokens = int(batch.tokens.lengths.sum())
    if which == "ours":
        from dataflywheel.config import TrainConfig
        from dataflywheel.train.loop import fit

        cfg = TrainConfig(epochs=1000, max_steps=steps, batch_size=size, optimizer="adamw", lr=1e-3,
                          weight_decay=0.01, grad_clip=1.0, early_stopping=None, threads=args.threads, seed=0)
        started = time.perf_counter()
        history = fit(model, batch, None, cfg, "multiclass", progress=False)
        seconds = time.perf_counter() - started
        losses = [e["loss"] for e in history.epochs]
    else:
        from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments
        from transformers.utils import logging

        logging.set_verbosity_error()
        tokenizer = AutoTokenizer.from_pretrained(str(base))
        enc = tokenizer(df.get_column("text").to_list(), truncation=True, max_length=args.max_length)
        labels = batch.y.tolist()
        features = [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                     "labels": int(labels[i])} for i in range(df.height)]
        hf_tokens = sum(len(f["input_ids"]) for f in features)
        if hf_tokens != tokens:
            raise SystemExit(f"tokenisers disagree: {hf_tokens} vs {tokens} tokens")
        targs = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="hf-trainer-"), per_device_train_batch_size=size,
                                  max_steps=steps, learning_rate=1e-3, weight_decay=0.01, max_grad_norm=1.0,
                                  lr_scheduler_type="constant", optim="adamw_torch", use_cpu=True, seed=0,
                                  logging_strategy="no", save_strategy="no", report_to=[], disable_tqdm=True,
                                  dataloader_num_workers=0)
        trainer = Trainer(model=model.hf, args=targs, train_dataset=features,
                          data_collator=DataCollatorWithPadding(tokenizer))
        started = time.perf_counter()
        out = trainer.train()
        seconds = time.perf_counter() - started
        losses = [out.training_loss]
        shutil.rmtree(targs.output_dir, ignore_errors=True)
    return {"examples_per_s": steps * size / seconds, "seconds": seconds, "steps": steps,
            "threads": torch.get_num_threads(), "loss": losses[-1], "peak_mb": peak_mb()}


def worker_infer(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import polars as pl
    from sklearn.metrics import f1_score

    from dataflywheel.config import ONNX_BACKENDS
    from dataflywheel.export.backends import with_backend
    from dataflywheel.registry.predictor import Predictor
    from dataflywheel.runtime import set_threads

    bundle = Path(args.bundle)
    threads = set_threads(args.threads, 0)
    before = peak_mb()
    started = time.perf_counter()
    predictor = with_backend(Predictor.load(bundle), backend, threads=threads)  # onnx: exported here
    load_s = time.perf_counter() - started
    if backend in ONNX_BACKENDS:  # as flywheel serve does: onnxruntime has the threads
        import torch

        torch.set_num_threads(1)
    test = pl.read_parquet(args.test)
    target = predictor.schema.target
    predictor.scores(test.head(8))  # warm-up
    best, scores = float("inf"), None
    for _ in range(args.repeats):
        started = time.perf_counter()
        scores, _ = predictor.scores(test)
        best = min(best, time.perf_counter() - started)
    labels = predictor.target.inverse_transform(np.asarray(scores).argmax(axis=1))
    truth = test.get_column(target).cast(pl.Utf8).to_list()
    return {"rows_per_s": test.height / best, "macro_f1": float(f1_score(truth, list(labels), average="macro")),
            "accuracy": float(np.mean(np.asarray(labels) == np.asarray(truth))), "load_s": load_s,
            "rows": test.height, "threads": threads, "peak_mb": peak_mb(), "imports_mb": before}


def run_worker(kind: str, name: str, args: argparse.Namespace, **extra: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", f"{kind}:{name}", "--threads", str(args.threads),
           "--max-length", str(args.max_length), "--batch-size", str(args.batch_size),
           "--train-rows", str(args.train_rows), "--train-steps", str(args.train_steps),
           "--repeats", str(args.repeats)]
    for key, value in extra.items():
        cmd += [f"--{key}", value]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    if out.returncode != 0:
        raise SystemExit(f"{kind}:{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the project and the server

def build_project(folder: Path, args: argparse.Namespace) -> None:
    from dataflywheel.data.bbc import bbc_frame, link_minilm

    bbc_frame(per_topic=args.per_topic).write_csv(folder / "bbc.csv")
    link_minilm(folder / "minilm")
    (folder / "flywheel.yaml").write_text(PROJECT_YAML.format(max_length=args.max_length, lora=json.dumps(LORA),
                                                              threads=args.threads))
    started = time.perf_counter()
    subprocess.run([str(BIN / "flywheel"), "run", "--no-progress"], cwd=folder, check=True, capture_output=True)
    print(f"built the bundle: flywheel run on {args.per_topic} articles per topic in "
          f"{time.perf_counter() - started:.0f} s", flush=True)


def champion(project: Path) -> tuple[Path, Path]:
    """The champion's bundle folder and its dataset's test split."""
    from dataflywheel.registry import versions
    from dataflywheel.store import Project

    store = Project.open(project / ".flywheel")
    try:
        info = versions.resolve(store, "champion")
        bundle = store.artifacts.path(info.artifact)
    finally:
        store.close()
    dataset = json.loads((bundle / "lineage.json").read_text())["dataset_id"]
    return bundle, project / ".flywheel" / "artifacts" / "datasets" / dataset / "test.parquet"


def text_script(folder: Path, test: Path, headlines: bool, n: int = 64) -> Path:
    """A wrk script that posts the first ``n`` test articles (or their headlines) in turn."""
    import polars as pl

    texts = pl.read_parquet(test).get_column("text").head(n).to_list()
    if headlines:
        texts = [t.split("\n")[0].strip() for t in texts]
    bodies = ",\n".join(f"[==[{json.dumps({'text': t})}]==]" for t in texts)
    path = folder / ("headlines.lua" if headlines else "articles.lua")
    path.write_text(f"local bodies = {{\n{bodies}\n}}\nlocal i = 0\n"
                    "request = function()\n  i = i + 1\n"
                    "  return wrk.format('POST', nil, {['Content-Type'] = 'application/json'},\n"
                    "                    bodies[(i % #bodies) + 1])\n"
                    "end\n")
    return path


def backend_config(project: Path, backend: str) -> Path:
    """A copy of the project's flywheel.yaml beside it (its relative paths hold) serving ``backend``."""
    import yaml

    config = yaml.safe_load((project / "flywheel.yaml").read_text())
    config["serve"] = {**(config.get("serve") or {}), "backend": backend}
    path = project / f".bench-serve-{backend}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def serve(project: Path, bundle: Path, test: Path, args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]]]:
    """texts/s at concurrency ``args.concurrency`` for whole articles and for their headlines:
    ours per backend and the hand-written endpoint, alternating, median of ``args.serve_repeats``
    runs. The wrk scripts and the hand-written app go to a temp folder; each backend's config, beside the
    project's flywheel.yaml, is removed after."""
    work = Path(tempfile.mkdtemp(prefix="bench-text-serve-"))
    (work / "hand_app.py").write_text(HAND_APP)
    scripts = {kind: text_script(work, test, kind == "headlines") for kind in ("articles", "headlines")}
    meta = json.loads((bundle / "model.json").read_text())
    base = meta["base_model"].get("path") or meta["base_model"]["name"]
    text_params = json.loads((bundle / "preprocessor.json").read_text())["text_features"][0][1]
    env = {"BASE": str((project / base).resolve()) if (project / base).exists() else base,
           "MAX_LENGTH": str(text_params["max_length"]),
           "OMP_NUM_THREADS": str(args.threads), "BUNDLE": str(bundle), "THREADS": str(args.threads),
           "PYTHONPATH": str(work)}
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    configs: list[Path] = []
    try:
        for backend in args.serve_backends:
            port = free_port()
            configs.append(backend_config(project, backend))
            proc = start([str(BIN / "flywheel"), "serve", "-c", configs[-1].name, "--port", str(port)], project, env)
            servers[f"ours ({backend})"] = (proc, f"http://127.0.0.1:{port}")
            wait_ready(f"http://127.0.0.1:{port}/v1/ready", timeout=300, proc=proc)
        port = free_port()
        proc = start([str(BIN / "uvicorn"), "hand_app:app", "--port", str(port), "--log-level", "warning"],
                     work, env)
        servers["hand-written"] = (proc, f"http://127.0.0.1:{port}")
        wait_ready(f"http://127.0.0.1:{port}/docs", timeout=300, proc=proc)
        results: dict[str, dict[str, dict[str, float]]] = {}
        for kind, script in scripts.items():
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
            for name, (_, url) in servers.items():  # warm-up: first batches allocate
                wrk(url + ("/predict" if name == "hand-written" else "/v1/predict"), script, args.concurrency, 2,
                    timeout=30)
                time.sleep(1)  # let the queue drain: requests cut off by wrk still run
            for _ in range(args.serve_repeats):
                for name, (_, url) in servers.items():
                    path = "/predict" if name == "hand-written" else "/v1/predict"
                    runs[name].append(wrk(url + path, script, args.concurrency, args.seconds, timeout=30))
                    print(f"  {kind} {name}: {runs[name][-1]['rps']:.1f} texts/s", flush=True)
                    time.sleep(1)
            results[kind] = {name: median_run(r) for name, r in runs.items()}
    finally:
        for proc, _ in servers.values():
            stop(proc)
        for config in configs:
            config.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    return results


# ---------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", help="a project folder whose champion is a text model (default: build one)")
    ap.add_argument("--per-topic", type=int, default=120, help="articles per topic for the built project")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch/onnxruntime threads, all runs")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16, help="fine-tuning batch size")
    ap.add_argument("--train-rows", type=int, default=320)
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2, help="inference passes (best) and training runs each")
    ap.add_argument("--infer-rounds", type=int, default=3,
                    help="rounds of one inference process per backend; best rows/s, and the median ratio to "
                         "the same round's fp32")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=10, help="per wrk run")
    ap.add_argument("--serve-repeats", type=int, default=2)
    ap.add_argument("--serve-backends", nargs="*", default=["torch", "onnx-int8"], choices=BACKENDS)
    ap.add_argument("--skip", nargs="*", default=[], choices=["train", "infer", "serve"])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--bundle", help=argparse.SUPPRESS)
    ap.add_argument("--test", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker:
        kind, name = args.worker.split(":")
        result = worker_train(name, args) if kind == "train" else worker_infer(name, args)
        print(json.dumps(result))
        return
    if "serve" not in args.skip and not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install -y wrk (or --skip serve)")
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    tmp = Path(tempfile.mkdtemp(prefix="bench-text-"))
    try:
        train: dict[str, list[dict[str, Any]]] = {"ours": [], "hf": []}
        if "train" not in args.skip:
            for _ in range(args.repeats):
                for name in train:
                    train[name].append(run_worker("train", name, args))
                    console.print(f"  train {name}: {train[name][-1]['examples_per_s']:.2f} examples/s")
        project = Path(args.project).resolve() if args.project else tmp
        if not args.project and ({"infer", "serve"} - set(args.skip)):
            build_project(tmp, args)
        infer: dict[str, dict[str, Any]] = {}  # each backend's best process
        paired: dict[str, list[float]] = {}  # each backend's rows/s over its round's fp32
        served: dict[str, dict[str, dict[str, float]]] = {}
        if {"infer", "serve"} - set(args.skip):
            bundle, test = champion(project)
            if "infer" not in args.skip:
                for _ in range(args.infer_rounds):  # alternating processes: a busy spell hits every backend
                    this_round: dict[str, float] = {}
                    for backend in BACKENDS:
                        r = run_worker("infer", backend, args, bundle=str(bundle), test=str(test))
                        console.print(f"  infer {backend}: {r['rows_per_s']:.1f} rows/s")
                        this_round[backend] = r["rows_per_s"]
                        if backend not in infer or r["rows_per_s"] > infer[backend]["rows_per_s"]:
                            infer[backend] = r
                        paired.setdefault(backend, []).append(this_round[backend] / this_round["torch"])
            if "serve" not in args.skip:
                served = serve(project, bundle, test, args)
        report(console, Table, args, train, infer, paired, served)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(console: Any, Table: Any, args: argparse.Namespace, train: dict[str, list[dict[str, Any]]],
           infer: dict[str, dict[str, Any]], paired: dict[str, list[float]],
           served: dict[str, dict[str, dict[str, float]]]) -> None:
    if train["ours"]:
        best = {name: max(runs, key=lambda r: r["examples_per_s"]) for name, runs in train.items()}
        t = Table(title=f"1. LoRA fine-tuning, MiniLM, {args.train_steps} steps x batch {args.batch_size}, "
                        f"max_length {args.max_length}, {args.threads} threads (best of {args.repeats})")
        for col in ("trainer", "examples/s", "seconds", "peak MB", "ratio vs HF Trainer"):
            t.add_column(col, justify="right")
        for name, label in (("ours", "dataflywheel fit()"), ("hf", "transformers Trainer")):
            r = best[name]
            t.add_row(label, f"{r['examples_per_s']:.2f}", f"{r['seconds']:.1f}", f"{r['peak_mb']:.0f}",
                      f"{r['examples_per_s'] / best['hf']['examples_per_s']:.2f}")
        console.print(t)
    if infer:
        t = Table(title=f"2. inference, fine-tuned MiniLM bundle, {infer['torch']['rows']} test texts, "
                        f"{infer['torch']['threads']} threads (raw text in: tokenisation included; best of "
                        f"{args.infer_rounds} processes x {args.repeats} passes; paired: median and range of "
                        f"each round's ratio to that round's fp32)")
        for col in ("backend", "rows/s", "vs fp32 (best)", "vs fp32 (paired)", "macro-F1", "accuracy", "load s",
                    "peak MB", "after imports MB"):
            t.add_column(col, justify="right")
        for backend, r in infer.items():
            ratios = sorted(paired[backend])
            t.add_row(backend, f"{r['rows_per_s']:.1f}", f"{r['rows_per_s'] / infer['torch']['rows_per_s']:.2f}",
                      f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})",
                      f"{r['macro_f1']:.4f}", f"{r['accuracy']:.4f}", f"{r['load_s']:.1f}", f"{r['peak_mb']:.0f}",
                      f"{r['imports_mb']:.0f}")
        console.print(t)
    for kind, results in served.items():
        hand = results["hand-written"]["rps"]
        what = "whole articles (cut to max_length)" if kind == "articles" else "headlines only (short texts)"
        t = Table(title=f"3. serving {what} at concurrency {args.concurrency}, wrk -t1, 127.0.0.1 "
                        f"(median run of {args.serve_repeats} x {args.seconds} s, the upper one when even)")
        for col in ("server", "texts/s", "p50 ms", "p99 ms", "errors", "vs hand-written"):
            t.add_column(col, justify="right")
        for name, r in results.items():
            t.add_row(name, f"{r['rps']:.1f}", f"{r['p50']:.0f}", f"{r['p99']:.0f}", f"{r['errors']:.0f}",
                      f"{r['rps'] / hand:.2f}")
        console.print(t)


if __name__ == "__main__":
    main()
