"""Bad input at predict time: unreadable numbers and dates, and extreme numbers, never crash,
give finite probabilities that do not depend on the other records, and are reported."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dataflywheel.features.preprocessor import Preprocessor
from dataflywheel.features.target import TargetEncoder
from dataflywheel.models.registry import build_model, model_spec
from dataflywheel.registry.bundle import ModelBundle
from dataflywheel.registry.predictor import Predictions, Predictor, to_frame

from cli_helpers import flywheel


class ReportingPredictor(Predictor):
    """Forwards ``coerced`` as registry/predictor.py will once the integrator passes it through."""

    def predict(self, rows):  # noqa: ANN001, ANN201
        result = super().predict(rows)
        result.coerced = dict(self.preprocessor.transform(to_frame(rows)).coerced)
        return result


def make_predictor(cls: type[Predictor] = Predictor) -> Predictor:
    rng = np.random.default_rng(0)
    n = 40
    train = pl.DataFrame(
        {
            "age": rng.normal(40, 10, n),
            "since": [f"2024-01-{d:02d}" for d in rng.integers(1, 28, n)],
            "ziel": rng.choice(["ja", "nein"], n).tolist(),
        }
    )
    pre = Preprocessor([("age", "number", "auto"), ("since", "datetime", "auto")]).fit(train)
    target = TargetEncoder("binary").fit(train["ziel"])
    spec = model_spec("mlp", n_numeric=pre.n_numeric_, cardinalities=pre.cardinalities_, n_outputs=1,
                      task="binary", hidden=[8])
    model = build_model(spec, seed=0).eval()
    return cls(ModelBundle(model=model, task="binary", preprocessor=pre, target=target, spec=spec, version=1))


def test_unreadable_dates_alone_do_not_crash_and_match_the_batch() -> None:
    predictor = make_predictor()
    rows = [{"age": 30.0, "since": "yesterday"}, {"age": 50.0, "since": "2024-01-10"}]
    together = predictor.predict(rows)
    for i, row in enumerate(rows):
        alone = predictor.predict([row])
        assert np.array_equal(alone.proba[0], together.proba[i])
    assert np.isfinite(together.proba).all()


@pytest.mark.parametrize("age", [1e308, -1e308, float("inf"), "abc"])
def test_extreme_or_unreadable_numbers_give_finite_probabilities(age: object) -> None:
    predictor = make_predictor()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = predictor.predict([{"age": age, "since": "2024-01-10"}])
    assert isinstance(result, Predictions) and np.isfinite(result.proba).all()
    assert result.proba.sum() == pytest.approx(1.0)
    if age in (float("inf"), "abc"):  # both read as missing
        missing = predictor.predict([{"age": None, "since": "2024-01-10"}])
        assert np.array_equal(result.proba, missing.proba)


def test_cli_predict_reports_unreadable_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    predictor = make_predictor(ReportingPredictor)
    monkeypatch.setattr("dataflywheel.api.load_model", lambda *a, **k: predictor)
    (tmp_path / "in.csv").write_text("age,since\nabc,yesterday\n41,2024-01-03\nxx,2024-01-04\n")
    r = flywheel("predict", "--model", "champion", "in.csv", cwd=tmp_path)
    assert r.code == 0, r.err
    assert pl.read_csv(r.out.encode()).height == 3
    assert "unreadable values (scored as missing): age=2, since=1" in r.err
