"""Process-wide runtime settings: torch's intra-op thread count, and the device a model runs on.

On a small shared machine torch's default (one thread per core, busy-waiting) can slow a small
model 50x when a neighbour process is busy. We choose the count deliberately: an explicit
setting wins; otherwise small models get one thread and large ones up to the available cores.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import torch

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


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside the block and restored after (None: unchanged)."""
    import torch

    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def resolve_device(name: str = "auto", where: str = "train.device", n_params: int | None = None) -> torch.device:
    """The torch device for ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``); a CUDA device
    always has its index. ``auto`` is the current CUDA GPU when torch sees one and the model has
    at least :data:`LARGE_MODEL_PARAMS` parameters (``n_params`` None counts as large), else the
    CPU: a small model's steps are shorter than a GPU's kernel launches and copies. A bad name, or
    a CUDA device torch cannot see, is a :class:`~dataflywheel.errors.ConfigError` naming ``where``."""
    import torch

    from dataflywheel.config import check_device
    from dataflywheel.errors import ConfigError

    try:
        check_device(name)
    except ValueError as exc:
        raise ConfigError(str(exc), where=where) from None
    if name == "auto":
        large = n_params is None or n_params >= LARGE_MODEL_PARAMS
        name = "cuda" if large and torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = cast("int | None", device.index)  # torch's stub says int; it is None for plain "cuda"
        if index is None and count:
            device = torch.device("cuda", torch.cuda.current_device())
        if (device.index or 0) >= count:
            seen = f"{count} CUDA device(s)" if count else "no CUDA device (a CPU build of torch, or no GPU)"
            raise ConfigError(f"{name!r} is not available: torch sees {seen}", where=where,
                              fix="set it to auto or cpu, or run where that GPU is")
    return device


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 natively: CUDA from compute capability 8.0 (Ampere), a CPU
    with oneDNN bf16 support; elsewhere autocast would emulate it, slower than fp32."""
    import torch

    if device.type == "cuda":  # is_bf16_supported() would look at the current device, not this one
        return torch.cuda.get_device_capability(device)[0] >= 8
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
