"""GPU benchmark: `train.device: cuda` on a real GPU, against Hugging Face `Trainer`, one process.

1. Checks (each printed as pass/FAIL with its figure; the exit status is 1 if one fails):
   fit() puts the model and every batch on the GPU; the trained model's GPU logits equal its
   CPU logits (fp32); train.bf16 runs the forward in bfloat16 there; a run stopped after 2 epochs
   and resumed from its checkpoint ends with the weights of an uninterrupted 4-epoch run (the
   GPU's dropout generator is part of the checkpoint).
2. Fine-tuning examples/s, ours (`fit`) against `Trainer` with the same model builder, data
   (token ids checked equal), batch size, sequence length, optimiser, clipping and constant LR;
   Trainer draws length-grouped batches too. Rows: MiniLM with LoRA (fp32 and bf16), MiniLM
   fully fine-tuned (bf16), and randomly initialised BERT-base and BERT-large geometries fully
   fine-tuned (bf16). Each pair runs `--rounds` times, alternating which goes first; the median
   is shown with the peak GPU memory of each.
3. The examples/bbc-news training on the GPU: LoRA on MiniLM, the example's split and settings,
   in fp32 and bf16; wall time of `fit` and the test macro-F1.
4. `--parts serve` (needs the whole project installed, polars and SQLAlchemy too): `flywheel run`
   on a BBC project with a from-scratch encoder trains on the GPU (`train.device: auto`); the
   champion is then served in process on the GPU and on the CPU (`serve.device`), checked to give
   the same predictions and a complete explanation, and timed (records/s in batches of 16).

    python benchmarks/bench_gpu.py                       # needs a CUDA GPU
    python benchmarks/bench_gpu.py --device cpu --quick  # the same code path, tiny, on a CPU
    python benchmarks/bench_gpu.py --write-data bbc.jsonl.gz   # BBC as one file, for a machine without the packages

Parts 1-3 need torch, transformers, peft, tokenizers, safetensors, scikit-learn and pydantic, not
polars (`--data` and `--minilm` point at copies of the BBC corpus and the MiniLM folder).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gzip
import inspect
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dataflywheel.config import ScheduleConfig, TrainConfig  # noqa: E402
from dataflywheel.features.ragged import Ragged  # noqa: E402
from dataflywheel.models.predict import predict_logits  # noqa: E402
from dataflywheel.train.loop import Batchable, fit  # noqa: E402

LORA = {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["query", "value"]}
GEOMETRIES = {  # hidden, layers, heads, intermediate
    "bert-base": (768, 12, 12, 3072),
    "bert-large": (1024, 24, 16, 4096),
}


# ---------------------------------------------------------------- data and models

def write_data(path: Path) -> None:
    from dataflywheel.data.bbc import bbc_frame

    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for row in bbc_frame().iter_rows(named=True):
            fh.write(json.dumps(row) + "\n")
    print(f"wrote {path}")


def read_data(path: Path | None) -> list[dict[str, str]]:
    if path is None:
        from dataflywheel.data.bbc import bbc_frame

        return list(bbc_frame().iter_rows(named=True))
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


class Encoded:
    """Texts tokenised once by the base's tokenizer: our ragged ids and Trainer's features."""

    def __init__(self, tokenizer: Any, rows: list[dict[str, str]], classes: list[str], max_length: int) -> None:
        enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=max_length)
        self.ids: list[list[int]] = enc["input_ids"]
        self.y = np.array([classes.index(r["topic"]) for r in rows], dtype=np.int64)
        self.pad_id = int(tokenizer.pad_token_id or 0)

    def batch(self) -> Batchable:
        n = len(self.ids)
        return Batchable.of(torch.zeros(n, 0), torch.zeros(n, 0, dtype=torch.long), torch.from_numpy(self.y),
                         Ragged.from_lists(self.ids), self.pad_id)

    def features(self) -> list[dict[str, Any]]:
        return [{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": int(y)}
                for ids, y in zip(self.ids, self.y, strict=True)]


def random_base(folder: Path, geometry: str, like: Path) -> Path:
    """A randomly initialised BERT of ``geometry`` with ``like``'s tokenizer, saved to ``folder``."""
    import shutil

    from transformers import BertConfig, BertModel

    if (folder / "config.json").exists():
        return folder
    hidden, layers, heads, inter = GEOMETRIES[geometry]
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=inter, max_position_embeddings=512)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (like / name).exists():
            shutil.copy(like / name, folder / name)
    return folder


def build(base: Path, finetune: str, n_outputs: int, max_length: int, vocab: int) -> Any:
    from dataflywheel.models.pretrained import build_pretrained, content_hash
    from dataflywheel.models.registry import available_models, build_model, model_spec, register_model

    if "pretrained" not in available_models():
        register_model("pretrained", build_pretrained)
    extra = {"lora": LORA} if finetune == "lora" else {}
    spec = model_spec("pretrained", n_numeric=0, cardinalities=[], n_outputs=n_outputs, task="multiclass",
                      text_vocab_size=vocab, max_length=max_length, base=str(base), base_hash=content_hash(base),
                      finetune=finetune, **extra)
    return build_model(spec, seed=0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


# ---------------------------------------------------------------- 1. checks

def checks(
    args: argparse.Namespace, base: Path, tok: Any, rows: list[dict[str, str]], classes: list[str]
) -> list[tuple[str, bool, str]]:
    device = torch.device(args.device)
    data = Encoded(tok, rows[: args.check_rows], classes, 64)
    out: list[tuple[str, bool, str]] = []

    def cfg(**kw: Any) -> TrainConfig:
        return TrainConfig(**{"epochs": 3, "batch_size": 16, "optimizer": "adamw", "lr": 2e-3, "early_stopping": None,
                              "seed": 0, "device": args.device, **kw})

    model = build(base, "lora", len(classes), 64, len(tok))
    seen: set[str] = set()
    hook = model.hf.register_forward_pre_hook(lambda m, a, kw: seen.add(str(kw["input_ids"].device)), with_kwargs=True)
    history = fit(model, data.batch(), data.batch(), cfg(), "multiclass", progress=False)
    hook.remove()
    losses = [e["loss"] for e in history.epochs]
    where = {str(p.device) for p in model.parameters()}
    want = str(torch.device(args.device, 0) if device.type == "cuda" and device.index is None else device)
    out.append(("model, batches and history on the device", where == seen == {want} and history.device == want,
                f"params {sorted(where)}, batches {sorted(seen)}, history {history.device}"))
    out.append(("loss decreases (LoRA, 3 epochs)", losses[-1] < losses[0], " -> ".join(f"{v:.3f}" for v in losses)))

    on_device = predict_logits(model, data.batch().inputs, pad_id=data.pad_id)
    on_cpu = predict_logits(copy.deepcopy(model).cpu(), data.batch().inputs, pad_id=data.pad_id)
    diff = float((on_device.cpu() - on_cpu).abs().max())
    out.append(("device logits equal CPU logits (fp32)", diff < 1e-3, f"max |diff| {diff:.2e}"))

    dtypes: list[torch.dtype] = []
    model = build(base, "lora", len(classes), 64, len(tok))
    model.hf.base_model.model.classifier.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    fit(model, data.batch(), None, cfg(epochs=1, max_steps=2, bf16=True), "multiclass", progress=False)
    out.append(("train.bf16 runs the forward in bfloat16", dtypes == [torch.bfloat16] * 2, f"head outputs {dtypes}"))

    with tempfile.TemporaryDirectory() as tmp:
        straight = build(base, "lora", len(classes), 64, len(tok))
        fit(straight, data.batch(), None, cfg(epochs=4), "multiclass", progress=False)
        first = build(base, "lora", len(classes), 64, len(tok))
        fit(first, data.batch(), None, cfg(epochs=2), "multiclass", checkpoint_dir=Path(tmp), progress=False)
        resumed = build(base, "lora", len(classes), 64, len(tok))
        history = fit(resumed, data.batch(), None, cfg(epochs=4), "multiclass", checkpoint_dir=Path(tmp),
                      resume=True, progress=False)
        a, b = straight.state_dict(), resumed.state_dict()
        diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
        out.append(("2 epochs + resume = 4 epochs (weights)", history.resumed_from == 2 and diff < 1e-4,
                    f"resumed from epoch {history.resumed_from}, max |diff| {diff:.2e}"))
    return out


# ---------------------------------------------------------------- 2. fine-tuning throughput

def trainer_args(args: argparse.Namespace, steps: int, bf16: bool, out: str) -> Any:
    from transformers import TrainingArguments

    params = inspect.signature(TrainingArguments).parameters
    grouping = ({"train_sampling_strategy": "group_by_length"} if "train_sampling_strategy" in params
                else {"group_by_length": True} if "group_by_length" in params else {})
    return TrainingArguments(output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=steps,
                             learning_rate=args.lr, weight_decay=0.01, max_grad_norm=1.0,
                             lr_scheduler_type="constant", optim="adamw_torch", bf16=bf16, seed=0,
                             logging_strategy="no", save_strategy="no", report_to=[], disable_tqdm=True,
                             dataloader_num_workers=0, use_cpu=args.device == "cpu", **grouping)


def one_run(which: str, args: argparse.Namespace, base: Path, finetune: str, bf16: bool, steps: int,
            data: Encoded, tok: Any, n_outputs: int) -> dict[str, float]:
    device = torch.device(args.device)
    model = build(base, finetune, n_outputs, args.max_length, len(tok))
    reset_peak(device)
    if which == "ours":
        cfg = TrainConfig(epochs=10_000, max_steps=steps, batch_size=args.batch_size, optimizer="adamw", lr=args.lr,
                          weight_decay=0.01, grad_clip=1.0, early_stopping=None, seed=0, device=args.device,
                          bf16=bf16)
        sync(device)
        started = time.perf_counter()
        fit(model, data.batch(), None, cfg, "multiclass", progress=False)
        sync(device)
        seconds = time.perf_counter() - started
    else:
        from transformers import DataCollatorWithPadding, Trainer

        with tempfile.TemporaryDirectory() as out:
            trainer = Trainer(model=model.hf, args=trainer_args(args, steps, bf16, out), train_dataset=data.features(),
                              data_collator=DataCollatorWithPadding(tok))
            sync(device)
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # Trainer prints its metrics dict
                trainer.train()
            sync(device)
            seconds = time.perf_counter() - started
    result = {"examples_per_s": steps * args.batch_size / seconds, "seconds": seconds, "peak_gb": peak_gb(device)}
    del model
    return result


def throughput(args: argparse.Namespace, minilm: Path, tok: Any, rows: list[dict[str, str]], classes: list[str],
               scratch: Path) -> list[dict[str, Any]]:
    data = Encoded(tok, rows, classes, args.max_length)
    configs = [("MiniLM", minilm, "lora", False, args.steps), ("MiniLM", minilm, "lora", True, args.steps),
               ("MiniLM", minilm, "full", True, args.steps)]
    for geometry in args.geometries:
        configs.append((geometry, random_base(scratch / geometry, geometry, minilm), "full", True, args.big_steps))
    table = []
    for name, base, finetune, bf16, steps in configs:
        one_run("ours", args, base, finetune, bf16, 3, data, tok, len(classes))  # warm-up: kernels, allocator
        runs: dict[str, list[dict[str, float]]] = {"ours": [], "trainer": []}
        for k in range(args.rounds):  # alternate who goes first: a first run meets new shapes
            for which in ("ours", "trainer") if k % 2 == 0 else ("trainer", "ours"):
                runs[which].append(one_run(which, args, base, finetune, bf16, steps, data, tok, len(classes)))
        row: dict[str, Any] = {"model": name, "finetune": finetune, "precision": "bf16" if bf16 else "fp32",
                               "steps": steps}
        for which, results in runs.items():
            row[f"{which}_examples_per_s"] = statistics.median(r["examples_per_s"] for r in results)
            row[f"{which}_all"] = [round(r["examples_per_s"], 1) for r in results]
            row[f"{which}_peak_gb"] = max(r["peak_gb"] for r in results)
        row["ratio"] = row["ours_examples_per_s"] / row["trainer_examples_per_s"]
        table.append(row)
        print(f"  {name} {finetune} {row['precision']}: ours {row['ours_all']} trainer {row['trainer_all']} "
              f"-> {row['ratio']:.2f}x", flush=True)
    return table


# ---------------------------------------------------------------- 3. the BBC example

def bbc_example(args: argparse.Namespace, minilm: Path, tok: Any, rows: list[dict[str, str]],
                classes: list[str]) -> list[dict[str, Any]]:
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    labels = [r["topic"] for r in rows]
    train_rows, rest = train_test_split(rows, test_size=0.3, random_state=42, stratify=labels)
    valid_rows, test_rows = train_test_split(rest, test_size=0.5, random_state=42, stratify=[r["topic"] for r in rest])
    train, valid, test = (Encoded(tok, part, classes, 128) for part in (train_rows, valid_rows, test_rows))
    out = []
    for bf16 in (False, True):
        cfg = TrainConfig(epochs=args.bbc_epochs, batch_size=16, optimizer="adamw", lr=1e-3, weight_decay=0.01,
                          schedule=ScheduleConfig(warmup_steps=30, decay="cosine"), grad_clip=1.0, seed=0,
                          early_stopping=None, device=args.device, bf16=bf16)
        model = build(minilm, "lora", len(classes), 128, len(tok))
        device = torch.device(args.device)
        sync(device)
        started = time.perf_counter()
        fit(model, train.batch(), valid.batch(), cfg, "multiclass",
            metrics={"accuracy": lambda y, p: float((p.argmax(1) == y).mean())}, progress=False)
        sync(device)
        seconds = time.perf_counter() - started
        batch = test.batch()
        logits = predict_logits(model, batch.inputs, pad_id=test.pad_id)
        f1 = f1_score(test.y, logits.argmax(1).cpu().numpy(), average="macro")
        out.append({"precision": "bf16" if bf16 else "fp32", "train_rows": len(train_rows), "test_rows": len(test_rows),
                    "epochs": args.bbc_epochs, "fit_seconds": seconds, "test_macro_f1": float(f1)})
        print(f"  BBC LoRA {out[-1]['precision']}: {seconds:.1f} s, macro-F1 {f1:.3f}", flush=True)
    return out


# ---------------------------------------------------------------- 4. flywheel run and serving on the GPU

SERVE_YAML = """\
project: gpu-serve
data:
  source: bbc.csv
  target: topic
  features: [{name: text, type: text, max_length: 256, vocab_size: 8000}]
  split: {train: 0.7, valid: 0.15, test: 0.15, seed: 42}
# ~10 M parameters: auto puts it on a GPU
model: {type: transformer, params: {n_layer: 4, n_head: 6, d_model: 384, dropout: 0.1}}
train: {epochs: 6, batch_size: 32, optimizer: adamw, lr: 0.001, seed: 0, early_stopping: null}
evaluate: {metric: macro_f1}
"""


def serve_part(args: argparse.Namespace, rows: list[dict[str, str]], scratch: Path) -> dict[str, Any]:
    import polars as pl

    from dataflywheel.config import load_config
    from dataflywheel.explain.attributions import explain_records
    from dataflywheel.loop import open_project, run
    from dataflywheel.serve.model import load_served_model

    folder = scratch / "serve"
    folder.mkdir()
    pl.DataFrame(rows).write_csv(folder / "bbc.csv")
    (folder / "flywheel.yaml").write_text(SERVE_YAML)
    started = time.perf_counter()
    result = run(folder / "flywheel.yaml", progress=False)
    run_s = time.perf_counter() - started
    project = open_project(load_config(folder / "flywheel.yaml"))
    records = [{"text": r["text"]} for r in rows[: args.serve_rows]]
    out: dict[str, Any] = {"flywheel_run_s": run_s, "test_macro_f1": result.metrics.get("macro_f1")}
    served = {}
    try:
        for device in ("auto", "cpu"):
            model = load_served_model(project, "champion", device=device)
            model.forward(records[:16])  # warm-up
            started = time.perf_counter()
            answers = [a for i in range(0, len(records), 16) for a in model.forward(records[i : i + 16])]
            seconds = time.perf_counter() - started
            served[device] = (model, answers)
            out["trained_on"] = json.loads((model.predictor.folder / "lineage.json").read_text()).get("device")
            out[f"served_on_{device}"] = model.device
            out[f"records_per_s_{device}"] = len(records) / seconds
        (gpu, on_gpu), (_, on_cpu) = served["auto"], served["cpu"]
        out["labels_equal"] = [a["prediction"] for a in on_gpu] == [a["prediction"] for a in on_cpu]
        out["max_probability_diff"] = max(abs(a["probabilities"][k] - b["probabilities"][k])
                                           for a, b in zip(on_gpu, on_cpu, strict=True) for k in a["probabilities"])
        explained = explain_records(gpu.predictor, records[:2])
        out["explanation_convergence_delta"] = max(abs(e["convergence_delta"]) for e in explained)
        out["explanation_tokens"] = [len(e["attributions"]) for e in explained]
    finally:
        project.close()
    return out


# ---------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--minilm", type=Path, help="the all-MiniLM-L6-v2 folder (default: the installed package's)")
    parser.add_argument("--data", type=Path, help="BBC as jsonl.gz (default: the installed corpus)")
    parser.add_argument("--write-data", type=Path, help="write the BBC corpus as jsonl.gz and exit")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--steps", type=int, default=150, help="optimiser steps per MiniLM run")
    parser.add_argument("--big-steps", type=int, default=60, help="optimiser steps per BERT-base/large run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--geometries", nargs="*", default=list(GEOMETRIES), choices=list(GEOMETRIES))
    parser.add_argument("--check-rows", type=int, default=160)
    parser.add_argument("--bbc-epochs", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["checks", "throughput", "bbc"])
    parser.add_argument("--parts", nargs="*", default=[], choices=["serve"],
                        help="extra parts (need the whole project)")
    parser.add_argument("--serve-rows", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to try the code path on a CPU")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    if args.write_data:
        write_data(args.write_data)
        return
    if args.quick:
        args.max_length, args.batch_size, args.steps, args.big_steps, args.rounds = 32, 8, 3, 2, 1
        args.geometries, args.check_rows, args.bbc_epochs, args.serve_rows = [], 48, 1, 32
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    if args.minilm is None:
        from dataflywheel.data.bbc import minilm_folder

        args.minilm = minilm_folder()
    rows = read_data(args.data)
    if args.quick:
        rows = rows[::10]
    classes = sorted({r["topic"] for r in rows})
    tok = AutoTokenizer.from_pretrained(str(args.minilm))
    device = torch.device(args.device)
    env = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "transformers": __import__("transformers").__version__,
           "cpu_threads": torch.get_num_threads(), "rows": len(rows)}
    print(json.dumps(env), flush=True)
    results: dict[str, Any] = {"env": env}
    failed = False
    with tempfile.TemporaryDirectory() as scratch:
        if "checks" not in args.skip:
            print("checks:", flush=True)
            results["checks"] = checks(args, args.minilm, tok, rows, classes)
            for name, ok, detail in results["checks"]:
                print(f"  [{'pass' if ok else 'FAIL'}] {name}: {detail}", flush=True)
                failed |= not ok
        if "bbc" not in args.skip:
            print("BBC example (LoRA MiniLM, the example's split and settings):", flush=True)
            results["bbc"] = bbc_example(args, args.minilm, tok, rows, classes)
        if "serve" in args.parts:
            print("flywheel run and serving on the device:", flush=True)
            results["serve"] = serve_part(args, rows, Path(scratch))
            print("  " + json.dumps(results["serve"]), flush=True)
            serve = results["serve"]
            on_device = torch.device(args.device).type
            ok = (serve["labels_equal"] and serve["max_probability_diff"] < 1e-3
                  and serve["explanation_convergence_delta"] < 0.05
                  and serve["trained_on"].startswith(on_device) and serve["served_on_auto"].startswith(on_device))
            print(f"  [{'pass' if ok else 'FAIL'}] served on the device like on the CPU, explanations complete",
                  flush=True)
            failed |= not ok
        if "throughput" not in args.skip:
            print(f"fine-tuning throughput (batch {args.batch_size}, max_length {args.max_length}):", flush=True)
            results["throughput"] = throughput(args, args.minilm, tok, rows, classes, Path(scratch))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str))
    if "throughput" in results:
        print("\n| model | fine-tuning | precision | ours ex/s | Trainer ex/s | ratio "
              "| ours peak GB | Trainer peak GB |")
        print("|---|---|---|---|---|---|---|---|")
        for r in results["throughput"]:
            print(f"| {r['model']} | {r['finetune']} | {r['precision']} | {r['ours_examples_per_s']:.0f} | "
                  f"{r['trainer_examples_per_s']:.0f} | {r['ratio']:.2f} | {r['ours_peak_gb']:.2f} | "
                  f"{r['trainer_peak_gb']:.2f} |")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
