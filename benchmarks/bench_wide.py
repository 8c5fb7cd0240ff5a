"""`flywheel init` on wide tables: time and peak memory against the column count.

Writes CSVs of ROWS rows x 2,000 / 10,000 / 100,000 number columns (plus a binary target) and
a one-line file of MANY short column names, then runs `flywheel init` on each in its own fresh
process and prints wall time, peak RSS, RSS growth over the process after its imports, and that
growth over the file's size. Targets: 100,000 columns in under 10 s, time linear in the
column count; the one-line file is refused from its header (`data.source.max_columns`) at
about the memory of the imports.

    python benchmarks/bench_wide.py [--rows 100] [--cols 2000 10000 100000] [--one-line 5000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

USER_ENV = dict(os.environ)
"""The environment before polars is imported here: importing polars sets its allocator's
settings (_RJEM_MALLOC_CONF) in os.environ, which the measured processes must not inherit."""

CHILD = r"""
import json, os, sys, time

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

from dataflywheel.cli import main  # the CLI's own imports, before any data is read
import polars, numpy, yaml, pydantic  # noqa: F401 - what init imports while it runs
base = rss_mb()
sys.argv = ["flywheel", "init", "--data", sys.argv[1], "--target", "target", "--output", sys.argv[2], "--force"]
start = time.perf_counter()
code = 0
try:
    main(fast_exit=False)
except SystemExit as exc:
    code = exc.code or 0
seconds = time.perf_counter() - start
with open("/proc/self/status") as f:  # VmHWM: this program's peak (ru_maxrss can hold the parent's)
    peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
print(json.dumps({"code": code, "seconds": seconds, "peak_mb": peak, "base_mb": base}), file=sys.__stdout__)
"""


def write_wide(path: Path, rows: int, cols: int) -> None:
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, cols)).round(3)
    frame = pl.DataFrame(x, schema=[f"f{i}" for i in range(cols)])
    frame.with_columns(target=pl.Series((rng.random(rows) < 0.5).astype(np.int8))).write_csv(path)


def write_one_line(path: Path, cols: int) -> None:
    path.write_text(",".join(f"c{i}" for i in range(cols)) + ",target\n")


def measure(data: Path, out: Path) -> dict:
    env = {**USER_ENV, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, str(data), str(out)], capture_output=True, text=True,
                          env=env, check=False)
    wall = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"code": done.returncode, "seconds": wall, "peak_mb": 0.0,
                                                  "base_mb": 0.0}
    result["wall"] = wall
    result["message"] = (done.stderr.strip().splitlines() or [""])[-1][:140]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--cols", type=int, nargs="*", default=[2_000, 10_000, 100_000])
    parser.add_argument("--one-line", type=int, default=5_000_000, help="columns of the one-line file (0: skip)")
    args = parser.parse_args()
    print(f"{'file':>28} {'MB':>7} {'init s':>7} {'process s':>9} {'peak MB':>8} {'growth MB':>9} "
          f"{'growth/size':>11}  exit")
    with tempfile.TemporaryDirectory() as tmp:
        cases = []
        for cols in args.cols:
            path = Path(tmp) / f"wide_{args.rows}x{cols}.csv"
            write_wide(path, args.rows, cols)
            cases.append(path)
        if args.one_line:
            path = Path(tmp) / f"one_line_{args.one_line}.csv"
            write_one_line(path, args.one_line)
            cases.append(path)
        for path in cases:
            size = path.stat().st_size / 2**20
            r = measure(path, Path(tmp) / "flywheel.yaml")
            growth = r["peak_mb"] - r["base_mb"]
            print(f"{path.name:>28} {size:7.1f} {r['seconds']:7.2f} {r['wall']:9.2f} {r['peak_mb']:8.0f} "
                  f"{growth:9.0f} {growth / size:10.1f}x  {r['code']}")
            if r["code"]:
                print(f"{'':>30}{r['message']}")


if __name__ == "__main__":
    main()
