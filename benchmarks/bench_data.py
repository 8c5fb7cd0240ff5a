"""Data stages vs a plain pandas baseline, same input, same run.

Generates a CSV of ROWS x COLS numeric columns with missing values and duplicate rows, then runs,
each in its own fresh process (so peak memory is its own):

- ours:   `flywheel data ingest` work (hash the file, read, infer the schema, coerce, drop
          duplicates, split, impute from train, write Parquet splits) + z-score encoding of every
          split with the fitted Preprocessor;
- pandas: read_csv, drop_duplicates, fillna(median), z-score (less work: no hashing, schema,
          split or writes).

Prints wall time and peak memory of each (RSS growth over the process after imports) and the
ratios; target: time ratio <= 1.0 and our peak <= 2x the Arrow table's size.

    python benchmarks/bench_data.py [--rows 1000000] [--cols 30]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "bench-out"
USER_ENV = dict(os.environ)
"""The environment before polars is imported here: importing polars sets its allocator's
settings (_RJEM_MALLOC_CONF) in os.environ, which workers must not inherit."""


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(rows: int, cols: int) -> Path:
    import numpy as np
    import polars as pl

    path = OUT / f"data_{rows}x{cols}.csv"
    if path.exists():
        return path
    OUT.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    n_unique = int(rows * 0.98)
    x = rng.normal(size=(n_unique, cols)).round(4)
    x[rng.random(x.shape) < 0.01] = np.nan
    dup = rng.integers(0, n_unique, rows - n_unique)
    x = np.concatenate([x, x[dup]])
    df = pl.DataFrame({f"f{i}": x[:, i] for i in range(cols)}).with_columns(
        pl.Series("target", (rng.random(rows) < 0.3).astype(np.int8))
    )
    df = df.with_columns([pl.col(f"f{i}").fill_nan(None) for i in range(cols)])
    tmp = path.with_suffix(".tmp")
    df.write_csv(tmp)
    tmp.rename(path)
    return path


def work_ours(path: Path) -> dict:
    from dataflywheel.config import config_from_dict
    from dataflywheel.data.dataset import ingest
    from dataflywheel.features.preprocessor import Preprocessor
    from dataflywheel.store import Project

    with tempfile.TemporaryDirectory() as root:
        cfg = config_from_dict({"data": {"source": str(path), "target": "target"}}, base_dir=Path(root))
        project = Project.open(Path(root) / ".flywheel")
        base = rss_mb()
        t0 = time.perf_counter()
        version = ingest(cfg, project)
        schema = version.schema()
        pre = Preprocessor.from_schema(schema).fit(version.split("train"))
        rows = 0
        for name in ("train", "valid", "test"):  # one split in memory at a time
            rows += pre.transform(version.split(name)).numeric.shape[0]
        seconds = time.perf_counter() - t0
        project.close()
    return {"seconds": seconds, "peak_mb": peak_mb() - base, "rows_out": rows}


def work_pandas(path: Path) -> dict:
    import pandas as pd

    base = rss_mb()
    t0 = time.perf_counter()
    df = pd.read_csv(path)
    df = df.drop_duplicates()
    features = df.drop(columns=["target"])
    features = features.fillna(features.median())
    z = ((features - features.mean()) / features.std()).to_numpy(dtype="float32")
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_mb": peak_mb() - base, "rows_out": int(z.shape[0])}


def arrow_mb(path: Path) -> float:
    import pyarrow.csv as pacsv

    return pacsv.read_csv(path).nbytes / 2**20


def worker(kind: str, path: Path) -> None:
    if kind == "arrow":
        print(json.dumps({"arrow_mb": arrow_mb(path)}))
        return
    if kind == "ours":
        # As in the CLI, dataflywheel is imported first: it configures polars' allocator.
        import dataflywheel  # noqa: F401
    import numpy  # noqa: F401  (import cost is not part of the measurement)
    import polars  # noqa: F401

    if kind == "ours":
        import dataflywheel.data.processing  # noqa: F401
        import dataflywheel.data.schema  # noqa: F401
        import dataflywheel.data.sources  # noqa: F401
        import dataflywheel.features.preprocessor  # noqa: F401

        print(json.dumps(work_ours(path)))
    else:
        import pandas  # noqa: F401

        print(json.dumps(work_pandas(path)))


def measure(kind: str, path: Path) -> dict:
    env = {**USER_ENV, "POLARS_MAX_THREADS": USER_ENV.get("POLARS_MAX_THREADS", str(os.cpu_count() or 1))}
    out = subprocess.run([sys.executable, __file__, "--worker", kind, str(path)], capture_output=True, text=True,
                         env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each side; the best time is kept")
    ap.add_argument("--worker", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]))
        return
    from rich.console import Console
    from rich.table import Table

    path = generate(args.rows, args.cols)
    arrow = measure("arrow", path)["arrow_mb"]
    runs = {k: [measure(k, path) for _ in range(args.repeat)] for k in ("pandas", "ours")}
    best = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
    peak = {k: max(r["peak_mb"] for r in v) for k, v in runs.items()}
    table = Table(title=f"data stages: {args.rows:,} rows x {args.cols} numeric columns "
                        f"({path.stat().st_size / 2**20:.0f} MB CSV, Arrow table {arrow:.0f} MB)")
    for col in ("", "wall s (best)", "peak MB over baseline", "peak / Arrow table"):
        table.add_column(col)
    for k in ("pandas", "ours"):
        table.add_row(k, f"{best[k]['seconds']:.2f}", f"{peak[k]:.0f}", f"{peak[k] / arrow:.2f}x")
    ratio = best["ours"]["seconds"] / best["pandas"]["seconds"]
    Console().print(table)
    print(f"time ratio ours/pandas = {ratio:.2f} (target <= 1.0); "
          f"our peak / Arrow table = {peak['ours'] / arrow:.2f} (target <= 2.0)")


if __name__ == "__main__":
    main()
