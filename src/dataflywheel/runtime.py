"""Process-wide runtime settings: torch's intra-op thread count.

On a small shared machine torch's default (one thread per core, busy-waiting) can slow a small
model 50x when a neighbour process is busy. We choose the count deliberately: an explicit
setting wins; otherwise small models get one thread and large ones up to the available cores.
"""

from __future__ import annotations

import os

# Parameter count above which extra threads pay for their synchronisation cost.
LARGE_MODEL_PARAMS = 5_000_000


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def choose_threads(requested: int | None, n_params: int | None = None) -> int:
    """Return the intra-op thread count to use for a model of ``n_params`` parameters."""
    if requested is not None:
        if requested < 1:
            from dataflywheel.errors import ConfigError

            raise ConfigError(f"must be >= 1 (got {requested})", where="train.threads")
        return requested
    if n_params is not None and n_params >= LARGE_MODEL_PARAMS:
        return max(1, available_cores())
    return 1


def set_threads(requested: int | None, n_params: int | None = None) -> int:
    """Set torch's intra-op threads (see :func:`choose_threads`) and return the count set."""
    import torch

    n = choose_threads(requested, n_params)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
