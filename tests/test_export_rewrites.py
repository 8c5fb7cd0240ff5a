"""The graph rewrites for onnxruntime's CPU kernels on small hand-built graphs: skip-LayerNorm
split, GELU's tanh form, and attention without its mask for unpadded batches (only when the
graph's masks mask nothing then). On an exported model: tests/test_export.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dataflywheel.export.rewrites import (
    approximate_gelu,
    split_skip_layer_norms,
    unmask_unpadded_attention,
)

OPSETS = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]


def ort_run(proto: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"],
                                   disabled_optimizers=["SkipLayerNormFusion"])
    return session.run(["logits"] if any(o.name == "logits" for o in proto.graph.output) else None, feeds)[0]


# -- skip-LayerNorm --------------------------------------------------------------------------

@pytest.mark.parametrize("stats", ["absent", "named", "read"])
def test_skip_layer_norms_are_split_into_add_and_layer_norm(stats: str) -> None:
    """onnxruntime's CPU SkipLayerNormalization is slow; the split graph computes the same
    output and the same residual sum (output 3, which pre-norm blocks read). The fusion names
    the mean and inverse-deviation outputs though nothing reads them ("named"): still split;
    a node whose mean is read stays fused."""
    rng = np.random.default_rng(0)
    dim = 8
    weights = [numpy_helper.from_array(rng.normal(size=dim).astype(np.float32), name)
               for name in ("gamma", "beta", "bias")]
    outputs = ["y", "", "", "sum"] if stats == "absent" else ["y", "mean", "inv_std", "sum"]
    node = helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], outputs,
                            domain="com.microsoft", epsilon=1e-5)
    after = [helper.make_node("Mul", ["sum", "y"], ["z"])]  # reads both outputs
    if stats == "read":
        after.append(helper.make_node("Identity", ["mean"], ["m"]))
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3, dim]) for n in ("x", "skip", "z")]
    info += [helper.make_tensor_value_info("m", TensorProto.FLOAT, None)] if stats == "read" else []
    graph = helper.make_graph([node, *after], "g", info[:2], info[2:], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid("com.microsoft", 1)])
    feeds = {"x": rng.normal(size=(3, dim)).astype(np.float32), "skip": rng.normal(size=(3, dim)).astype(np.float32)}

    def run(proto: Any) -> np.ndarray:
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"],
                                       disabled_optimizers=["SkipLayerNormFusion"])
        return session.run(None, feeds)[0]

    fused = run(model)
    split_skip_layer_norms(model.graph)
    if stats == "read":
        assert [n.op_type for n in model.graph.node] == ["SkipLayerNormalization", "Mul", "Identity"]
    else:
        assert [n.op_type for n in model.graph.node] == ["Add", "Add", "LayerNormalization", "Mul"]
    np.testing.assert_allclose(run(model), fused, atol=1e-5)


# -- GELU ------------------------------------------------------------------------------------

def test_gelu_in_tanh_form_is_within_5e_4_of_the_exact_form() -> None:
    x = np.linspace(-6, 6, 601, dtype=np.float32).reshape(1, -1)
    bias = numpy_helper.from_array(np.zeros(x.shape[1], np.float32), "b")
    node = helper.make_node("BiasGelu", ["x", "b"], ["y"], domain="com.microsoft")
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(x.shape)) for n in ("x", "y")]
    model = helper.make_model(helper.make_graph([node], "g", info[:1], info[1:], [bias]), opset_imports=OPSETS)
    exact = ort_run(model, {"x": x})
    assert approximate_gelu(model.graph) == 1
    tanh_form = ort_run(model, {"x": x})
    assert 0 < np.abs(tanh_form - exact).max() < 5e-4  # a different function, barely


# -- the unmasked graph ----------------------------------------------------------------------

def attention_graph(mask: str) -> Any:
    """Tokens (B, 4) -> embeddings -> self-attention (2 heads) -> mean -> ``logits`` (B, 8), the
    attention masked by ``mask``: ``padding`` (key padding from attention_mask), ``bias``
    (additive bias from attention_mask), ``causal`` (a fixed causal bias, which masks with
    nothing padded), or ``tokens`` (key padding from the token ids, not from attention_mask)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(10, 8)).astype(np.float32), "emb"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array([1, 2], np.int64), "axes12"),
             numpy_helper.from_array(np.array([1, 1, 4, 1], np.int64), "rows"),
             numpy_helper.from_array(np.array(-10000.0, np.float32), "big"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(0, np.int64), "zero")]
    nodes = [helper.make_node("Gather", ["emb", "tokens"], ["x"])]
    extra = ["", ""]
    if mask == "padding":
        nodes.append(helper.make_node("Cast", ["attention_mask"], ["kpm"], to=TensorProto.INT32))
        extra = ["kpm"]
    elif mask == "tokens":
        nodes += [helper.make_node("Equal", ["tokens", "zero"], ["is_pad"]),
                  helper.make_node("Not", ["is_pad"], ["keep"]),
                  helper.make_node("Cast", ["keep"], ["kpm"], to=TensorProto.INT32)]
        extra = ["kpm"]
    elif mask == "bias":
        nodes += [helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
                  helper.make_node("Sub", ["one", "m"], ["off"]),
                  helper.make_node("Mul", ["off", "big"], ["b2"]),
                  helper.make_node("Unsqueeze", ["b2", "axes12"], ["b4"]),
                  helper.make_node("Expand", ["b4", "rows"], ["bias"])]
        extra = ["", "bias"]
    elif mask == "causal":
        causal = np.triu(np.full((4, 4), -10000.0, np.float32), k=1).reshape(1, 1, 4, 4)
        inits.append(numpy_helper.from_array(causal, "causal_init"))
        nodes.append(helper.make_node("Identity", ["causal_init"], ["bias"]))
        extra = ["", "bias"]
    nodes += [helper.make_node("MultiHeadAttention", ["x", "x", "x", "", *extra], ["y"], domain="com.microsoft",
                               num_heads=2),
              helper.make_node("ReduceMean", ["y", "axis1"], ["logits"], keepdims=0)]
    inputs = [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", 4]),
              helper.make_tensor_value_info("attention_mask", TensorProto.BOOL, ["batch", 4])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 8])]
    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits), opset_imports=OPSETS)


@pytest.mark.parametrize(("mask", "inert"), [("padding", True), ("bias", True), ("causal", False), ("tokens", False)])
def test_attention_is_unmasked_only_when_its_masks_mask_nothing_unpadded(mask: str, inert: bool) -> None:
    proto = attention_graph(mask)
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(proto)
    assert unmask_unpadded_attention(rewritten) == (1 if inert else 0)
    assert (rewritten == proto) is not inert
    tokens = np.array([[1, 2, 3, 4], [0, 5, 0, 6], [7, 8, 9, 0]])
    for keep in (np.ones_like(tokens, dtype=bool), tokens > 0):  # unpadded, then padded
        feeds = {"tokens": tokens, "attention_mask": keep}
        np.testing.assert_allclose(ort_run(rewritten, feeds), ort_run(proto, feeds), atol=1e-6)
