"""The LLM flywheel over real HTTP, by itself: `flywheel serve --auto-retrain` on a generation model,
completions made with the official openai client, users choosing between two answers and correcting
them through POST /v1/feedback, the retrain worker building SFT rows and preference pairs, DPO on the
champion, the gate, and the server answering with the new champion once it is promoted."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from server_helpers import serving
from test_generation_run import write_project

from dataflywheel.loop import as_config, open_project, run
from dataflywheel.registry import versions

from llm_helpers import save_tiny_llama

openai = pytest.importorskip("openai")

LOOP = """retrain: {every_n_labels: 10, poll_seconds: 0.3, method: dpo}
evaluate: {metric: preference_accuracy, guard_metrics: [], answers: {max_prompts: 4, max_new_tokens: 8}}
"""


@pytest.mark.slow
def test_serve_auto_retrain_learns_from_choices_and_corrections(tmp_path: Path) -> None:
    from dataflywheel.serve.app import create_app

    base = save_tiny_llama(tmp_path / "tiny-llama")
    config = write_project(tmp_path / "p", base, finetune="lora")
    text = config.read_text().replace("train: {epochs: 3,", "train: {dpo: {beta: 0.5, epochs: 3, batch_size: 4}, "
                                                           "epochs: 3,")
    config.write_text(text + LOOP)  # the first version learned by sft, the next ones by dpo (retrain.method)
    assert run(config, progress=False).version == 1

    app = create_app(config, auto_retrain=True)
    with serving(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        feedback_ids = []
        for i in range(12):
            r = client.chat.completions.create(
                model="assistant", n=2, temperature=1.0, max_tokens=6,
                messages=[{"role": "user", "content": f"question {i}: tell me about the evening rain"}])
            texts = [c.message.content for c in r.choices]
            if i % 2 and texts[0] != texts[1]:
                body = {"completion_id": r.id, "choice": 1}
            else:
                body = {"completion_id": r.id, "correction": f"answer {i}: it is the evening rain.", "choice_index": 0}
            got = httpx.post(url + "/v1/feedback", json=body, timeout=30)
            assert got.status_code == 201, got.text
            feedback_ids.append(got.json()["feedback_id"])

        cfg = as_config(config)
        store = open_project(cfg)
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and versions.alias_version(store, "challenger") is None \
                    and versions.alias_version(store, "champion") == 1:
                time.sleep(0.5)
            info = versions.resolve(store, 2)  # the worker trained v2 by itself
            checks = {c["metric"]: c for c in (info.verdict or {})["checks"]}
            assert "preference_accuracy" in checks
            import json

            lineage = json.loads((store.artifacts.path(info.artifact) / "lineage.json").read_text())
            assert lineage["train_method"] == "dpo" and lineage["dpo"]["pairs"] >= 1
            promoted = versions.alias_version(store, "champion") == 2
        finally:
            store.close()
        if promoted:  # then the server swaps to it and answers with v2
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and app.state.server.completions.generator.version != 2:
                time.sleep(0.2)
            assert app.state.server.completions.generator.version == 2
            r = client.chat.completions.create(model="assistant", max_tokens=4,
                                               messages=[{"role": "user", "content": "hello"}])
            row = app.state.server.writer.prediction(r.id)
            assert row is not None and row.model_version == 2
    from dataflywheel.lineage_trace import trace_feedback

    store = open_project(as_config(config))
    try:
        assert trace_feedback(store, feedback_ids[0])["first_model"]["version"] == 2
    finally:
        store.close()
