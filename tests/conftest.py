"""Shared fixtures. Tests run torch on one intra-op thread (the machine is small and shared) and
on the CPU wherever they run: ``auto`` devices resolve to the CPU, so exact-number tests hold on
a machine with a GPU too (benchmarks/bench_gpu.py checks the GPU paths)."""

from __future__ import annotations

import os
from collections.abc import Iterator

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _cpu_only() -> Iterator[None]:
    import torch

    patch = pytest.MonkeyPatch()
    patch.setattr(torch.cuda, "is_available", lambda: False)
    yield
    patch.undo()
