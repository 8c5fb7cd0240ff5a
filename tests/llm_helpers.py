"""A tiny causal LM base for tests, built offline: a byte-level BPE tokenizer trained on a few
sentences (ChatML template, ``<|im_end|>`` as eos and end of turn, ``<pad>``) and a random
2-layer Llama (hidden 32, tied embeddings, as SmolLM2 has), saved with ``save_pretrained`` as a
real ``AutoModelForCausalLM`` folder would be."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CORPUS = [
    "what is the capital of france? the capital of france is paris.",
    "what is two plus two? two plus two is four.",
    "please email me at the address below, or call my phone number.",
    "hello world, how are you today? i am fine, thank you.",
    "the weather in town is sunny with a little rain in the evening.",
    "you are a helpful assistant. answer in one short sentence.",
    "0123456789 @ . , ? ! - + ( ) : ;",
    "the cat sat on the mat. a dog ran in the park. the quick brown fox.",
]
EOS, PAD = "<|im_end|>", "<pad>"


def tiny_tokenizer(*, vocab_size: int = 360, template: str | None = CHATML, eos: bool = True) -> Any:
    """The tiny byte-level BPE tokenizer (a character outside the corpus is several byte tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, "<|im_start|>", EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(CORPUS, trainer)
    tokens: dict[str, Any] = {"pad_token": PAD, **({"eos_token": EOS} if eos else {})}
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, **tokens)
    if template is not None:
        tok.chat_template = template
    return tok


def tiny_llama(vocab_size: int, *, seed: int = 0, positions: int = 256) -> Any:
    """A random tiny Llama (no folder), in eval mode."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=positions,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def save_tiny_llama(folder: Path, *, seed: int = 0, template: str | None = CHATML, eos: bool = True,
                    vocab_size: int = 360, positions: int = 256, **config: Any) -> Path:
    """Write a tokenizer and a random tiny Llama into ``folder`` (created); return it."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    folder.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer(vocab_size=vocab_size, template=template, eos=eos)
    tok.save_pretrained(folder)
    settings = {"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": positions,
                "tie_word_embeddings": True, "pad_token_id": tok.pad_token_id, "bos_token_id": None,
                "eos_token_id": tok.eos_token_id if eos else None, **config}
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**settings))
    if eos:
        model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(folder)
    if not eos:
        (folder / "generation_config.json").unlink(missing_ok=True)
    return folder


def eos_id(folder: Path) -> int:
    added = json.loads((folder / "tokenizer.json").read_text())["added_tokens"]
    return int(next(t["id"] for t in added if t["content"] == EOS))


def reference_ids(folder: Path, messages: list[dict[str, str]], *, generation_prompt: bool) -> list[int]:
    """Token ids by the base folder's own Hugging Face tokenizer (the reference to compare with)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = tok.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True,
                                  return_dict=False)
    return [int(i) for i in ids]
