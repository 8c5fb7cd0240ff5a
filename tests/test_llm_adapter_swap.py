"""A promoted LoRA version of the served base swaps in over it: only its adapters are read, every
other weight is shared with the model being served, and it answers as the version loaded whole."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from test_generation_run import write_project

from dataflywheel import registry
from dataflywheel.loop import as_config, open_project, run
from dataflywheel.registry import versions
from dataflywheel.serve.llm.server import GenerationServer

from llm_helpers import save_tiny_llama


def test_a_lora_version_of_the_same_base_swaps_in_sharing_its_weights(tmp_path: Path) -> None:
    base = save_tiny_llama(tmp_path / "tiny-llama")
    config = write_project(tmp_path / "p", base, finetune="lora")
    assert run(config, progress=False).version == 1
    config.write_text(config.read_text().replace("seed: 0", "seed: 1"))
    assert run(config, progress=False).version == 2
    cfg = as_config(config)
    store = open_project(cfg)
    try:
        versions.promote(store, 1, reason="test")
        whole = registry.load(store, 2, base_dir=cfg.base_dir).predictor.model.hf
    finally:
        store.close()

    server = GenerationServer(cfg, "champion", swap_poll_seconds=0.1)
    server.start()
    try:
        first = server.completions.generator.model
        assert server.shared is not None and server.shared_swaps == 0
        store = open_project(cfg)
        try:
            versions.promote(store, 2, reason="test")
        finally:
            store.close()
        deadline = time.monotonic() + 60
        while server.completions.generator.version != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.completions.generator.version == 2 and server.shared_swaps == 1
        second = server.completions.generator.model
        assert second is not first
        shared = dict(first.named_parameters())
        adapted = set(server.shared.weights)
        for name, p in second.named_parameters():
            module = name.rsplit(".", 1)[0]
            same = p.data_ptr() == shared[name].data_ptr()
            assert same == (module not in adapted), name  # only the adapted modules hold new weights
        ids = torch.tensor([[1, 5, 9, 13, 2, 7, 30, 4]])
        with torch.no_grad():
            torch.testing.assert_close(second(input_ids=ids).logits, whole(input_ids=ids).logits, rtol=1e-5,
                                       atol=1e-5)
            assert not torch.allclose(first(input_ids=ids).logits, second(input_ids=ids).logits)
    finally:
        server.close()
