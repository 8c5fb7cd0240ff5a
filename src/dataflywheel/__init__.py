"""dataflywheel: data to a deployed model and back, one versioned, traceable loop.

The Python API mirrors the CLI::

    import dataflywheel as fw
    result = fw.run("flywheel.yaml")            # flywheel run
    model = fw.load_model("champion")           # flywheel predict --model champion
    model.predict([{"mean radius": 14.1, ...}])

Heavy modules (torch, polars, scikit-learn) load on first use, so importing the package
and ``flywheel --help`` stay fast.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# polars' allocator (jemalloc) keeps freed pages for a while; the data stages free whole
# copies of a table as they go, so hand them back at once (peak memory 2.3x -> 2.0x the
# table on a 1M-row ingest). Takes effect only if polars is not imported yet; a user's own
# setting wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")

if TYPE_CHECKING:
    from dataflywheel.api import ingest, load_config, load_model, run, train, validate_batch

__all__ = ["ingest", "load_config", "load_model", "run", "train", "validate_batch", "__version__"]


def __getattr__(name: str) -> Any:
    if name in {"ingest", "load_config", "load_model", "run", "train", "validate_batch"}:
        from dataflywheel import api

        return getattr(api, name)
    raise AttributeError(f"module 'dataflywheel' has no attribute {name!r}")
