"""`flywheel serve` on a registered generation model: create_app serves the OpenAI-compatible
routes for it (the task decides the server), answers with the bundle's own answers, logs every
completion, follows the access matrix and hot swaps when the alias moves."""

from __future__ import annotations

from pathlib import Path

import pytest
from server_helpers import serving
from test_generation_run import write_project

from dataflywheel.loop import run

from llm_helpers import save_tiny_llama

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    folder = tmp_path_factory.mktemp("assistant")
    config = write_project(folder, base, finetune="lora")
    assert run(config, progress=False).version == 1
    return config


def test_python_api_generate_cli_generate_and_predict_on_prompts(project: Path) -> None:
    import json

    import polars as pl

    from dataflywheel.api import load_model

    from cli_helpers import flywheel

    model = load_model(1, project)
    prompts = ["question 2: tell me about two plus two", "question 5: tell me about a short sentence"]
    answers = model.generate(prompts, max_new_tokens=10)
    assert model.generate(prompts[0], max_new_tokens=10) == answers[0] and len(answers) == 2
    cli = flywheel("generate", prompts[0], "--model", "1", "--max-tokens", "10", cwd=project.parent)
    assert cli.code == 0, cli.err
    assert cli.out == answers[0] + "\n"
    rows = [{"id": i, "messages": [{"role": "user", "content": p}]} for i, p in enumerate(prompts)]
    (project.parent / "ask.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = flywheel("predict", "ask.jsonl", "--model", "1", "--format", "jsonl", "--keep", "id", cwd=project.parent)
    assert out.code == 0, out.err
    got = pl.read_ndjson(out.out.encode())
    assert got["completion"].to_list() == model.generate(prompts, max_new_tokens=64)
    assert got["id"].to_list() == [0, 1]
    assert "2 prompts answered" in out.err


def test_serve_answers_as_the_bundle_generates_logs_and_hot_swaps(project: Path) -> None:
    from dataflywheel import registry
    from dataflywheel.loop import as_config, open_project
    from dataflywheel.registry.generation import generate
    from dataflywheel.serve.app import create_app

    cfg = as_config(project)
    store = open_project(cfg)
    try:
        predictor = registry.load(store, "champion", base_dir=cfg.base_dir).predictor
        prompt = "question 2: tell me about two plus two"
        expected = generate(predictor, [prompt], max_new_tokens=12)[0]
    finally:
        store.close()
    app = create_app(project)
    with serving(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        assert [m.id for m in client.models.list().data] == ["assistant"]
        r = client.chat.completions.create(model="assistant", temperature=0, max_tokens=12,
                                           messages=[{"role": "user", "content": prompt}])
        assert r.choices[0].message.content == expected
        server = app.state.server
        row = server.writer.prediction(r.id)
        assert row is not None and row.model_version == 1
        # feedback on it, checked by the version's task (generation), redacted by the bundle's privacy
        import httpx

        fb = httpx.post(url + "/v1/feedback", json={"completion_id": r.id, "thumbs": "down",
                                                    "comment": "wrong; mail me at jo@example.com"})
        assert fb.status_code == 201 and fb.json()["kind"] == "thumbs", fb.text
        assert [f.value for f in server.writer.feedback_for(r.id)] == [
            {"thumbs": "down", "choice_index": 0, "comment": "wrong; mail me at [email]"}]
        label = httpx.post(url + "/v1/feedback", json={"prediction_id": r.id, "label": "good"})
        assert label.status_code == 422 and "use correction" in label.json()["detail"]
        assert client.chat.completions.create(model="champion", max_tokens=2,
                                              messages=[{"role": "user", "content": "hi"}]).choices

        # a second version promoted: the server follows the alias
        cfg2 = project.read_text().replace("seed: 0", "seed: 1").replace("epochs: 3", "epochs: 1")
        project.write_text(cfg2)
        out = run(project, progress=False)
        assert out.version == 2
        from dataflywheel.registry.versions import set_alias

        store = open_project(as_config(project))
        try:
            set_alias(store, "champion", 2)
        finally:
            store.close()
        result = server.watcher.check(force=True)
        assert result.version == 2 and result.error is None
        r2 = client.chat.completions.create(model="assistant", max_tokens=3,
                                            messages=[{"role": "user", "content": "hi"}])
        assert server.writer.prediction(r2.id).model_version == 2  # type: ignore[union-attr]


def test_the_access_matrix_guards_the_completion_routes(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataflywheel.serve.app import create_app

    monkeypatch.setenv("FLYWHEEL_API_TOKEN", "s3cret")
    app = create_app(project)
    with serving(app) as url:
        import httpx

        assert httpx.get(url + "/v1/models").status_code == 401  # reads need the token by default
        ok = httpx.get(url + "/v1/models", headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        r = client.chat.completions.create(model="assistant", max_tokens=2,
                                           messages=[{"role": "user", "content": "hi"}])
        assert r.choices  # predictions are open unless serve.auth.predict: token
        feedback = {"completion_id": r.id, "rating": 5}
        assert httpx.post(url + "/v1/feedback", json=feedback).status_code == 401  # writes always need it
        assert httpx.post(url + "/v1/feedback", json=feedback, headers={"authorization": "Bearer s3cret"}
                          ).status_code == 201
