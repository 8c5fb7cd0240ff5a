"""A version beside its base per instruction: ROUGE-L of the headlines, accuracy (exact match) of
the topics, each with its paired bootstrap 95 % interval. ``flywheel run`` records both models'
per-prompt scores (the metrics' and the verdict's ``item_scores``); this splits them by prompt.

    python compare.py            # v1 (the first version: the one scored beside its base)
    python compare.py --json
"""

import argparse
import json

from dataflywheel.config import load_config
from dataflywheel.data.dataset import get_version
from dataflywheel.data.instructions import by_instruction
from dataflywheel.evaluate.bootstrap import Interval
from dataflywheel.loop import open_project
from dataflywheel.registry import versions

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="v1")
    parser.add_argument("--config", default="flywheel.yaml")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cfg = load_config(args.config)
    project = open_project(cfg)
    info = versions.resolve(project, args.model)
    base = (info.verdict or {}).get("base_metrics") or {}
    if not base:
        raise SystemExit(f"v{info.version} was not scored beside its base (only a first version is)")
    ours = info.metrics
    if ours.get("answers_left_out") or base.get("answers_left_out"):
        raise SystemExit("some test prompts were left out: the item scores do not line up with the test split")
    test = get_version(project, info.dataset_id).split("test")
    answered = test.get_column(cfg.data.prompt_column).head(ours["answered"]).to_list()
    found = by_instruction(answered, ours["item_scores"], base["item_scores"])
    if args.json:
        print(json.dumps(found, indent=2))
    for kind, metrics in found.items():
        for metric, iv in metrics.items():
            fields = {k: v for k, v in iv.items() if k != "excludes_zero"}
            print(f"{kind}: {Interval(**fields).describe(metric, 'base')}")
