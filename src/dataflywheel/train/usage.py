"""What a training run costs: peak memory, for the tokens/s and memory its history reports.

On a CUDA device the peak is ``torch.cuda.max_memory_allocated`` since :func:`reset_peak_memory`
(the tensors torch allocated: weights, activations, optimiser state). On the CPU it is the
process's peak resident set size (``resource.getrusage``): everything the process ever held,
imports and data included, so it is an upper bound on what the training needed.
"""

from __future__ import annotations

import sys

import torch


def reset_peak_memory(device: torch.device) -> None:
    """Start counting the peak afresh (CUDA; the CPU's peak RSS cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """The peak memory in MiB (see the module docstring for what is counted where)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
