"""A GGUF file as a Hugging Face model folder: converted once, cached by the file's hash.

``transformers`` reads a GGUF file (``from_pretrained(dir, gguf_file=name)``), dequantising its
weights to fp32, but that takes 20-30 s for a 135M model and refuses ``save_pretrained``. So a
``base:`` naming a ``.gguf`` file, and ``flywheel convert-gguf``, go through
:func:`gguf_folder`: the model is rebuilt from its config without the GGUF quantisation entry,
given the dequantised weights, and saved as safetensors beside its tokenizer (chat template
included) and generation config, under ``<cache>/<first 16 hex of the file's sha256>``. The
folder is written under a temporary name and renamed into place last, so a crash never leaves a
half-written model that a later run would trust.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from dataflywheel.errors import ConfigError

DEFAULT_CACHE = Path(os.environ.get("FLYWHEEL_MODEL_CACHE", Path.home() / ".cache" / "dataflywheel" / "gguf"))
_DONE = "converted.json"


def file_hash(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def gguf_folder(path: str | Path, cache: str | Path | None = None) -> Path:
    """The safetensors model folder for the GGUF file ``path``, converting it on first use."""
    import json

    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"no GGUF file at {source}", where="model.base",
                          fix="name an existing .gguf file, or a Hugging Face model folder")
    digest = file_hash(source)
    target = Path(cache or DEFAULT_CACHE) / digest[:16]
    if (target / _DONE).is_file():
        return target
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _convert(source, tmp)
        (tmp / _DONE).write_text(json.dumps({"source": source.name, "sha256": digest}))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(source: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = source.name
    loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=name, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype="float32")  # type: ignore[no-untyped-call]
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    end_of_turn = _end_of_turn(tokenizer)
    if end_of_turn is not None:  # chat generation ends at the template's end-of-turn token
        eos = model.generation_config.eos_token_id
        ids = [eos] if isinstance(eos, int) else list(eos or [])
        model.generation_config.eos_token_id = list(dict.fromkeys([*ids, end_of_turn]))
    out.mkdir(parents=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _end_of_turn(tokenizer: object) -> int | None:
    """The id of the chat template's end-of-turn token (``<|im_end|>``, ``<|eot_id|>``, ...)."""
    vocab = tokenizer.get_vocab()  # type: ignore[attr-defined]
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"):
        if token in vocab:
            return int(vocab[token])
    return None
