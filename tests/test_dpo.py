"""DPO through the one training loop: the loss and its gradients against a NumPy reference of the
formula, the pairs' log-probabilities against the base model's own logits, the reference
log-probabilities cached, and `flywheel retrain` with train.method dpo on completion feedback."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from test_completion_set import Log
from test_generation_run import write_project

from dataflywheel.errors import ConfigError, DataError
from dataflywheel.loop import as_config, open_project, run
from dataflywheel.train.preference import DPOObjective, dpo_loss, encode_pairs, sequence_logps

from llm_helpers import reference_ids, save_tiny_llama


def numpy_dpo(pc: np.ndarray, pr: np.ndarray, rc: np.ndarray, rr: np.ndarray, beta: float,
              ) -> tuple[float, np.ndarray, np.ndarray]:
    """The mean DPO loss and its gradients with respect to the policy's log-probabilities."""
    z = beta * ((pc - rc) - (pr - rr))
    loss = np.mean(np.logaddexp(0.0, -z))  # -log sigmoid(z)
    sig = 1.0 / (1.0 + np.exp(z))  # sigmoid(-z)
    return float(loss), -beta * sig / len(z), beta * sig / len(z)


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_dpo_loss_and_gradients_match_a_numpy_reference(beta: float) -> None:
    rng = np.random.default_rng(3)
    pc, pr, rc, rr = (rng.normal(-20, 6, size=16) for _ in range(4))
    tc = torch.tensor(pc, requires_grad=True)
    tr = torch.tensor(pr, requires_grad=True)
    loss, good, bad = dpo_loss(tc, tr, torch.tensor(rc), torch.tensor(rr), beta)
    loss.mean().backward()
    ref_loss, ref_gc, ref_gr = numpy_dpo(pc, pr, rc, rr, beta)
    assert float(loss.detach().mean()) == pytest.approx(ref_loss, rel=1e-12)
    assert tc.grad is not None and tr.grad is not None
    np.testing.assert_allclose(tc.grad.numpy(), ref_gc, rtol=1e-10)
    np.testing.assert_allclose(tr.grad.numpy(), ref_gr, rtol=1e-10)
    np.testing.assert_allclose(good.numpy(), beta * (pc - rc))
    np.testing.assert_allclose(bad.numpy(), beta * (pr - rr))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, base: Path) -> Path:
    config = write_project(tmp_path_factory.mktemp("assistant"), base, finetune="lora")
    assert run(config, progress=False).version == 1
    return config


def completion_logp(model: torch.nn.Module, base: Path, prompt: str, answer: str) -> torch.Tensor:
    """log p(answer and its end of turn | prompt) from the transformers model's own logits."""
    prefix = reference_ids(base, [{"role": "user", "content": prompt}], generation_prompt=True)
    full = reference_ids(base, [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                         generation_prompt=False)[:-1]  # the template's newline after the end of turn is not learned
    assert full[:len(prefix)] == prefix
    ids = torch.tensor([full])
    logits = model(input_ids=ids).logits.float()  # (1, T, vocab)
    logp = torch.log_softmax(logits[0, :-1], dim=-1)  # (T-1, vocab): position t predicts token t+1
    targets = ids[0, 1:]
    picked = logp[torch.arange(len(targets)), targets]
    return picked[len(prefix) - 1:].sum()


PAIRS = pl.DataFrame({"prompt": ["spell cat", "say hello to the evening rain", "name a fruit"],
                      "chosen": ["cat.", "hello, rain!", "an apple."],
                      "rejected": ["kat.", "go away.", "a car, a very long red car with four wheels."]})


def test_pair_logps_and_dpo_gradients_match_the_base_models_own_logits(project: Path, base: Path) -> None:
    from dataflywheel.train.methods import champion_start

    cfg = as_config(project)
    store = open_project(cfg)
    try:
        from dataflywheel.data.dataset import get_version
        from dataflywheel.registry import versions

        trained, _ = champion_start(cfg, store, get_version(store, versions.resolve(store, 1).dataset_id))
    finally:
        store.close()
    model, pre = trained.bundle.model, trained.bundle.preprocessor
    hf = model.hf
    data = encode_pairs(pre, PAIRS, "prompt", "completion")
    logps = sequence_logps(model, data, batch_size=2)
    hf.eval()
    with torch.no_grad():
        expected = torch.tensor([[float(completion_logp(hf, base, p, a)) for a in (c, r)]
                                 for p, c, r in PAIRS.iter_rows()])
    torch.testing.assert_close(logps, expected, rtol=1e-4, atol=1e-4)

    # the objective's gradients on a mixed batch equal those of the formula over the reference logits
    data.y = expected + torch.tensor([[0.3, -0.2], [0.0, 0.5], [-1.0, 0.1]])
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n, p in model.named_parameters() if p.requires_grad)
    model.eval()  # no dropout: both sides see the same network
    idx = torch.tensor([2, 0])
    loss = DPOObjective(beta=0.5).batch_loss(model, data, idx)
    ours = torch.autograd.grad(loss, trainable)
    pc = torch.stack([completion_logp(hf, base, PAIRS["prompt"][i], PAIRS["chosen"][i]) for i in idx.tolist()])
    pr = torch.stack([completion_logp(hf, base, PAIRS["prompt"][i], PAIRS["rejected"][i]) for i in idx.tolist()])
    ref = data.y[idx]
    theirs = torch.autograd.grad(-torch.nn.functional.logsigmoid(0.5 * ((pc - ref[:, 0]) - (pr - ref[:, 1]))).mean(),
                                 trainable)
    assert float(loss) == pytest.approx(float(-torch.nn.functional.logsigmoid(
        0.5 * ((pc - ref[:, 0]) - (pr - ref[:, 1]))).mean()), rel=1e-4)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)


def copy_project(project: Path, folder: Path, extra: str) -> Path:
    shutil.copytree(project.parent, folder, ignore=shutil.ignore_patterns(".flywheel"))
    text = (folder / "flywheel.yaml").read_text()
    (folder / "flywheel.yaml").write_text(text + extra)
    return folder / "flywheel.yaml"


def test_retrain_with_dpo_tunes_the_champion_on_completion_feedback(project: Path, tmp_path: Path) -> None:
    from dataflywheel.feedback.log import LogWriter
    from dataflywheel.feedback.retrain import retrain
    from dataflywheel.registry import versions

    config = copy_project(project, tmp_path / "p", "evaluate: {metric: preference_accuracy, guard_metrics: "
                                                   "[rouge_l, win_rate], answers: {max_prompts: 8}}\n")
    dpo = "method: dpo, dpo: {beta: 0.5, epochs: 4, lr: 0.01, batch_size: 2}"
    text = config.read_text().replace("train: {epochs: 3,", f"train: {{{dpo}, epochs: 3,")
    config.write_text(text)
    cfg = as_config(config)
    with pytest.raises(ConfigError, match="tunes the champion"):
        run(cfg, progress=False)  # nothing to start from
    sft = as_config(config.parent / "flywheel.yaml")
    sft.train.method = "sft"
    assert run(sft, progress=False).version == 1
    store = open_project(cfg)
    writer = LogWriter(store.metadata).start()
    lines: list[str] = []
    try:
        log = Log(writer)
        log.feedback(log.completion("is it warm?", "yes."), "thumbs", thumbs="up", choice_index=0)
        with pytest.raises(DataError, match="no preference pairs"):
            retrain(cfg, store, log=lines.append)
        for i in range(12):
            cid = log.completion(f"question {i}: spell cat", "kat.", "cat.")
            if i % 2:
                log.feedback(cid, "choice", choice=1)
            else:
                correction = log.feedback(cid, "correction", correction="the word is cat.", choice_index=0)
        lines.clear()
        result = retrain(cfg, store, log=lines.append)
        assert result.status == "trained" and result.version == 2, result.message
        text = "\n".join(lines)
        assert "DPO: " in text and "preference pairs" in text and "reference model v1" in text
        loss = float(text.split("preference pairs (beta 0.5): loss ")[1].split(",")[0])
        assert loss < np.log(2)  # below the loss of a policy equal to its reference
        cached = list((store.artifacts.path("models/reference")).glob("*.safetensors"))
        assert cached
        info = versions.resolve(store, 2)
        assert info.metrics  # evaluated and gated like any version
        checks = {c["metric"]: c for c in (info.verdict or {})["checks"]}
        assert checks["preference_accuracy"]["role"] == "primary"
        assert checks["preference_accuracy"]["challenger"] is not None
        assert checks["preference_accuracy"]["challenger"] >= checks["preference_accuracy"]["champion"]
        win = checks["win_rate"]
        assert win["challenger"] + win["champion"] == pytest.approx(1.0)
        assert info.verdict["eval_rows"]["preference_pairs"] >= 1
        # v2 prefers the chosen answers more than v1 did: DPO moved the policy the pairs' way
        from dataflywheel.data.dataset import get_version
        from dataflywheel.feedback.completion_set import preference_pairs
        from dataflywheel.registry.bundle import read_trainable_model

        pairs = preference_pairs(get_version(store, info.dataset_id), "train")
        margins = []
        for version in (1, 2):
            folder = store.artifacts.path(versions.resolve(store, version).artifact)
            model, _ = read_trainable_model(folder, base_dirs=[cfg.base_dir])
            from dataflywheel.features.preprocessor import Preprocessor

            logps = sequence_logps(model, encode_pairs(Preprocessor.load(folder / "preprocessor.json"), pairs,
                                                       "prompt", "completion"))
            margins.append(float((logps[:, 0] - logps[:, 1]).mean()))
        assert margins[1] > margins[0] + 0.5, margins
        assert result.method == "dpo" and result.built["preference_pairs_by_kind"] == {"correction": 6, "choice": 6}
        assert "training method: dpo" in text and "trained (dpo)" in result.message

        # lineage: the correction -> the first model that learned from it; v2's completion chain
        from dataflywheel.lineage_trace import trace_feedback

        learned = trace_feedback(store, correction)
        assert learned["first_model"]["version"] == 2 and learned["feedback"]["kind"] == "correction"
    finally:
        writer.close()
        store.close()
