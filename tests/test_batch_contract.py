"""The batch contract: named inputs, declared by encoders and models, collated by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from dataflywheel.errors import ModelError
from dataflywheel.features.batch import (
    InputKey,
    check_reads,
    collate,
    input_key,
    model_reads,
    register_input,
    sources,
    text_names,
)
from dataflywheel.features.ragged import Ragged
from dataflywheel.models import registry

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "breast-cancer" / "flywheel.yaml"


def test_names_are_registered_once_and_numbered_per_text_column() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_input(InputKey("numeric", "float"))
    assert text_names(0) == ("tokens", "attention_mask") and text_names(2) == ("tokens_2", "attention_mask_2")
    second = input_key("tokens_1")
    assert second.kind == "long" and second.mask == "attention_mask_1" and second.dynamic == (0, 1)
    assert input_key("attention_mask_1").kind == "bool"
    with pytest.raises(ModelError, match="unknown batch input"):
        input_key("numeric_1")  # only text inputs repeat
    assert sources(("numeric", "tokens", "attention_mask", "tokens_1", "attention_mask_1")) == [
        "numeric", "tokens", "tokens_1"]


def test_collate_pads_each_ragged_input_with_its_own_pad_id() -> None:
    inputs = {"numeric": torch.arange(6.0).reshape(3, 2), "tokens": Ragged.from_lists([[5, 6, 7], [8], [9, 9]]),
              "tokens_1": Ragged.from_lists([[1], [2, 3], []])}
    batch = collate(inputs, torch.tensor([2, 0]), pad_id={"tokens": 0, "tokens_1": 4})
    assert torch.equal(batch["numeric"], torch.tensor([[4.0, 5.0], [0.0, 1.0]]))
    assert batch["tokens"].tolist() == [[9, 9, 0], [5, 6, 7]]
    assert batch["attention_mask"].tolist() == [[True, True, False], [True, True, True]]
    assert batch["tokens_1"].tolist() == [[4], [1]] and batch["attention_mask_1"].tolist() == [[False], [True]]
    assert collate(inputs, slice(1, 2))["tokens"].tolist() == [[8]]


def test_a_model_must_declare_what_it_reads() -> None:
    with pytest.raises(ModelError, match="does not declare"):
        model_reads(nn.Linear(2, 1))
    with pytest.raises(ModelError, match=r"reads \['tokens'\]"):
        check_reads(("numeric", "tokens"), ("numeric", "categorical"))


class ReadsTokens(nn.Module):
    """A plugin model that reads token ids, registered without declaring text parameters."""

    inputs = ("numeric", "tokens", "attention_mask")

    def __init__(self, n_numeric: int, n_outputs: int) -> None:
        super().__init__()
        self.head = nn.Linear(n_numeric, n_outputs)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out: torch.Tensor = self.head(batch["numeric"])
        return out


def build_reads_tokens(*, n_numeric: int, cardinalities: list[int], n_outputs: int, task: str,
                       **_params: Any) -> nn.Module:
    return ReadsTokens(n_numeric, n_outputs)


@pytest.fixture
def reads_tokens() -> Any:
    registry.register_model("reads-tokens", build_reads_tokens)
    yield "reads-tokens"
    registry._BUILDERS.pop("reads-tokens", None)


def test_training_refuses_a_model_that_reads_what_the_data_lacks(tmp_path: Path, reads_tokens: str) -> None:
    from dataflywheel.loop import run

    config = EXAMPLE.read_text().replace("type: mlp", f"type: {reads_tokens}").replace(
        "params: {hidden: [64, 64], activation: relu, dropout: 0.0}", "params: {}")
    (tmp_path / "flywheel.yaml").write_text(config)
    with pytest.raises(ModelError) as err:
        run(tmp_path / "flywheel.yaml", progress=False)
    assert "tokens" in err.value.message and err.value.where == "model.type"
    assert not (tmp_path / ".flywheel" / "artifacts" / "models").exists()  # nothing trained or registered


def test_every_built_in_model_declares_names_its_preprocessor_produces() -> None:
    spec = registry.model_spec("mlp", n_numeric=3, cardinalities=[4], n_outputs=1, task="binary")
    assert model_reads(registry.build_model(spec)) == ("numeric", "categorical")
    spec = registry.model_spec("transformer", n_numeric=0, cardinalities=[], n_outputs=3, task="multiclass",
                               text_vocab_size=30, max_length=8, more_text=[[20, 6]])
    model = registry.build_model(spec, seed=0)
    assert model_reads(model) == ("numeric", "categorical", *text_names(0), *text_names(1))
    batch = {"numeric": torch.zeros(2, 0), "categorical": torch.zeros(2, 0, dtype=torch.long),
             "tokens": torch.ones(2, 5, dtype=torch.long), "attention_mask": torch.ones(2, 5, dtype=torch.bool),
             "tokens_1": torch.ones(2, 6, dtype=torch.long), "attention_mask_1": torch.ones(2, 6, dtype=torch.bool)}
    assert model(batch).shape == (2, 3)
    with pytest.raises(ModelError, match="max_length"):
        model(batch | {"tokens_1": torch.ones(2, 7, dtype=torch.long),
                       "attention_mask_1": torch.ones(2, 7, dtype=torch.bool)})
    assert np.isfinite(model(batch).detach().numpy()).all()
