"""Training benchmarks.

Part 1: time per epoch of our ``fit()`` against a minimal hand-written PyTorch loop (same
model, data, batch size, optimiser, seed, one thread), on breast cancer and on a synthetic
200,000 x 30 table. Target: ours / hand-written <= 1.10. Epoch times are medians after
warm-up epochs; the two loops alternate in rounds so a busy neighbour hits both alike.

Part 2: whole-process wall time of ``flywheel run`` on breast cancer (50 epochs, fresh project
folder) against a standalone script that loads the same CSV, standardises, trains the same MLP
for 50 epochs and prints test accuracy. Target: ratio <= 2.0.

Part 3: ``flywheel --help`` start-up. Target: <= 0.5 s.

Run: ``.venv/bin/python benchmarks/bench_train.py [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dataflywheel.config import TrainConfig
from dataflywheel.models.registry import build_model, model_spec
from dataflywheel.train.loop import Batchable, fit

TARGET = 1.10


@dataclass
class Row:
    part: str
    case: str
    detail: str
    ours_s: float
    baseline_s: float
    note: str = ""
    target: float = TARGET

    @property
    def ratio(self) -> float:
        return self.ours_s / self.baseline_s


# -- data ----------------------------------------------------------------------------------------


def breast_cancer() -> Batchable:
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    return _batch(X, y)


def synthetic(n: int = 200_000, d: int = 30, seed: int = 0) -> Batchable:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    logit = X @ rng.normal(size=d) / np.sqrt(d) + 0.5 * np.sin(X[:, 0] * X[:, 1])
    return _batch(X, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64))


def _batch(X: np.ndarray, y: np.ndarray) -> Batchable:
    return Batchable.of(
        torch.as_tensor(X, dtype=torch.float32),
        torch.zeros(len(X), 0, dtype=torch.long),
        torch.as_tensor(y, dtype=torch.float32),
    )


# -- the two loops -------------------------------------------------------------------------------


def _model(data: Batchable, seed: int) -> nn.Module:
    spec = model_spec(
        "mlp", n_numeric=data.inputs["numeric"].shape[1], cardinalities=[], n_outputs=1, task="binary"
    )
    return build_model(spec, seed=seed)


def ours_epoch_times(data: Batchable, cfg: TrainConfig) -> tuple[list[float], nn.Module]:
    model = _model(data, cfg.seed)
    history = fit(model, data, None, cfg, "binary", progress=False)
    return [e["seconds"] for e in history.epochs], model


def hand_epoch_times(data: Batchable, cfg: TrainConfig) -> tuple[list[float], nn.Module]:
    """The minimal loop a practitioner would write: randperm, slice, step."""
    model = _model(data, cfg.seed)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    X, C, y, n, bs = data.inputs["numeric"], data.inputs["categorical"], data.y, len(data), cfg.batch_size
    times = []
    for _ in range(cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model({"numeric": X[idx], "categorical": C[idx]}).squeeze(-1), y[idx])
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times, model


def compare_epochs(
    data: Batchable, cfg: TrainConfig, *, warmup: int, rounds: int
) -> tuple[float, float, bool]:
    """Median epoch seconds (ours, hand-written) and whether both ended with equal weights."""
    torch.set_num_threads(1)
    ours: list[float] = []
    hand: list[float] = []
    same = True
    for r in range(rounds):
        # alternate which loop goes first, so drift in the machine's load hits both alike
        order = (
            (ours_epoch_times, hand_epoch_times)
            if r % 2 == 0
            else (hand_epoch_times, ours_epoch_times)
        )
        results = {fn: fn(data, cfg) for fn in order}
        (t_ours, m_ours), (t_hand, m_hand) = results[ours_epoch_times], results[hand_epoch_times]
        ours += t_ours[warmup:]
        hand += t_hand[warmup:]
        pairs = zip(m_ours.state_dict().values(), m_hand.state_dict().values(), strict=True)
        same &= all(torch.equal(a, b) for a, b in pairs)
    return statistics.median(ours), statistics.median(hand), same


# -- parts -----------------------------------------------------------------------------------------


def part1(quick: bool = False) -> list[Row]:
    """fit() vs the hand-written loop, per epoch."""
    cases = [
        (
            "breast cancer",
            breast_cancer(),
            TrainConfig(epochs=12 if quick else 40, batch_size=32, early_stopping=None),
            4,
            3,
        ),
        (
            "synthetic 200,000 x 30",
            synthetic(n=40_000 if quick else 200_000),
            TrainConfig(epochs=3 if quick else 4, batch_size=32, early_stopping=None),
            1,
            2,
        ),
    ]
    rows = []
    for name, data, cfg, warmup, rounds in cases:
        ours, hand, same = compare_epochs(data, cfg, warmup=warmup, rounds=rounds)
        steps = -(-len(data) // cfg.batch_size)
        detail = (
            f"{len(data):,} rows, batch {cfg.batch_size}, {steps:,} steps/epoch, adam, mlp [64, 64]"
        )
        rows.append(
            Row(
                "1: fit() vs hand loop (s/epoch)",
                name,
                detail,
                ours,
                hand,
                "same weights" if same else "WEIGHTS DIFFER",
            )
        )
    return rows


STANDALONE = """
import sys, time
import numpy as np, torch
from torch import nn
torch.set_num_threads(1)
torch.manual_seed(0)
data = np.genfromtxt(sys.argv[1], delimiter=",", skip_header=1)
X, y = data[:, :-1].astype(np.float32), data[:, -1].astype(np.float32)
rng = np.random.default_rng(0)
idx = rng.permutation(len(X))
n_test = int(0.15 * len(X))
test, train = idx[:n_test], idx[n_test:]
mu, sd = X[train].mean(0), X[train].std(0) + 1e-8
X = (X - mu) / sd
Xt, yt = torch.from_numpy(X[train]), torch.from_numpy(y[train])
model = nn.Sequential(nn.Linear(X.shape[1], 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.BCEWithLogitsLoss()
for epoch in range(50):
    perm = torch.randperm(len(Xt))
    for i in range(0, len(Xt), 32):
        b = perm[i:i + 32]
        opt.zero_grad()
        loss = loss_fn(model(Xt[b]).squeeze(1), yt[b])
        loss.backward()
        opt.step()
with torch.no_grad():
    p = torch.sigmoid(model(torch.from_numpy(X[test])).squeeze(1)).numpy()
print("test accuracy", float(((p >= 0.5) == y[test]).mean()))
"""

FLYWHEEL_YAML = """
data: {source: breast_cancer.csv, target: target}
model: {type: mlp, params: {hidden: [64, 64]}}
train: {epochs: 50, batch_size: 32, optimizer: adam, lr: 0.001, seed: 0, early_stopping: null, threads: 1}
"""


def _wall(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return seconds


def part2(quick: bool = False) -> list[Row]:
    """Whole-process wall time: `flywheel run` from a fresh folder vs a standalone script."""
    import shutil
    import tempfile

    from sklearn.datasets import load_breast_cancer

    bc = load_breast_cancer()
    flywheel = str(Path(sys.executable).with_name("flywheel"))
    ours, base = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        header = ",".join(f"f{i}" for i in range(bc.data.shape[1])) + ",target"
        rows = np.column_stack([bc.data, bc.target])
        np.savetxt(root / "breast_cancer.csv", rows, delimiter=",", header=header, comments="", fmt="%.6g")
        (root / "standalone.py").write_text(STANDALONE)
        for i in range(1 if quick else 3):
            folder = root / f"run{i}"
            folder.mkdir()
            shutil.copy(root / "breast_cancer.csv", folder)
            (folder / "flywheel.yaml").write_text(FLYWHEEL_YAML)
            base.append(_wall([sys.executable, str(root / "standalone.py"), str(root / "breast_cancer.csv")], root))
            ours.append(_wall([flywheel, "run", "--no-progress"], folder))
    return [Row("2: whole process (s)", "breast cancer, 50 epochs",
                "fresh folder: ingest, split, train, evaluate, report, register "
                "vs load CSV, standardise, train, accuracy",
                statistics.median(ours), statistics.median(base), "median of runs", target=2.0)]


def part3(quick: bool = False) -> list[Row]:
    """`flywheel --help` against the 0.5 s budget (baseline: a bare interpreter start)."""
    flywheel = str(Path(sys.executable).with_name("flywheel"))
    helps = [_wall([flywheel, "--help"], Path.cwd()) for _ in range(5)]
    bare = [_wall([sys.executable, "-c", "pass"], Path.cwd()) for _ in range(5)]
    best = min(helps)
    return [Row("3: flywheel --help (s)", "CLI start-up", "best of 5; baseline = python -c pass",
                best, min(bare), "OK <= 0.5 s" if best <= 0.5 else "OVER 0.5 s", target=0.5 / min(bare))]


PARTS: list[Callable[[bool], list[Row]]] = [part1, part2, part3]


def render(rows: list[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"dataflywheel training overhead (target ratio <= {TARGET:.2f}), torch threads = 1"
    )
    for col in ("part", "case", "setup", "ours", "baseline", "ratio", "note"):
        table.add_column(col, justify="right" if col in ("ours", "baseline", "ratio") else "left")
    for r in rows:
        ratio = f"[{'green' if r.ratio <= r.target else 'red'}]{r.ratio:.3f}[/] (<= {r.target:.2f})"
        table.add_row(
            r.part, r.case, r.detail, f"{r.ours_s:.4f}", f"{r.baseline_s:.4f}", ratio, r.note
        )
    console = Console()
    if not console.is_terminal:
        console.width = 160  # a log file: do not wrap the table
    console.print(table)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smaller data and fewer epochs (a smoke test)"
    )
    args = parser.parse_args(argv)
    rows = [row for part in PARTS for row in part(args.quick)]
    render(rows)
    return rows


if __name__ == "__main__":
    main()
