"""The inference network of BERT classifiers: the last layer for the first token alone gives the
Hugging Face forward's logits, and the int8 and ONNX backends run it only where that holds."""

from __future__ import annotations

import pytest
import torch

from dataflywheel.export.first_token import FirstTokenBert, inference_network, supports_first_token


def tiny_classifier(attn: str, seed: int = 0, **config: object) -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=40, num_labels=5, initializer_range=0.3, **config)
    cfg._attn_implementation = attn
    return BertForSequenceClassification(cfg).eval()


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (6, 17) and a mask with a different amount of right padding in each row."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 100, (6, 17), generator=gen)
    lengths = torch.tensor([17, 1, 5, 16, 9, 2])
    mask = (torch.arange(17)[None, :] < lengths[:, None]).long()
    return tokens * mask, mask


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_first_token_forward_gives_the_hugging_face_logits(attn: str) -> None:
    hf = tiny_classifier(attn)
    tokens, mask = batch()
    empty = torch.zeros(6, 0)
    with torch.inference_mode():
        expected = hf(input_ids=tokens, attention_mask=mask).logits
        got = FirstTokenBert(hf)({"numeric": empty, "categorical": empty.long(), "tokens": tokens,
                                  "attention_mask": mask})
        unmasked = FirstTokenBert(hf)({"numeric": empty, "categorical": empty.long(), "tokens": tokens})
        expected_unmasked = hf(input_ids=tokens).logits
    assert got.shape == (6, 5)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unmasked, expected_unmasked, atol=1e-5, rtol=1e-5)
    # padding matters: dropping the mask changes the padded rows, so the mask really is applied
    assert not torch.allclose(got[1:3], unmasked[1:3], atol=1e-3)


def test_only_plain_bert_classifiers_are_rewritten() -> None:
    from transformers import BertConfig, BertModel

    assert supports_first_token(tiny_classifier("sdpa"))
    assert not supports_first_token(tiny_classifier("sdpa", is_decoder=True))
    assert not supports_first_token(BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                         intermediate_size=64)))


def test_inference_network_picks_the_rewrite_for_merged_bert_only() -> None:
    from dataflywheel.models.pretrained import PretrainedClassifier
    from dataflywheel.models.transformer import build_transformer

    full = PretrainedClassifier(tiny_classifier("sdpa"), "full", 40, {})
    assert isinstance(inference_network(full), FirstTokenBert)
    scratch = build_transformer(n_numeric=0, cardinalities=[], n_outputs=3, task="multiclass", text_vocab_size=50,
                                max_length=12, n_layer=1, n_head=2, d_model=16)
    assert inference_network(scratch) is scratch


def test_an_unmerged_lora_model_runs_unchanged() -> None:
    from dataflywheel.models.pretrained import PretrainedClassifier, _with_lora

    lora = PretrainedClassifier(_with_lora(tiny_classifier("sdpa"), {"r": 4}), "lora", 40, {})
    assert inference_network(lora) is lora
    merged = lora.for_inference()
    assert isinstance(inference_network(merged), FirstTokenBert)
