"""Block-Hadamard rotation: exact in float, spreads outlier channels, inserted once per activation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from models import F, make, run
from tensorslim.algorithms.rotation import hadamard, rotate_input_channels
from tensorslim.passes.dynamic_quant import DynamicQuantConfig, DynamicQuantPass


@pytest.mark.parametrize("n", [1, 2, 16, 64, 256])
def test_hadamard_is_orthonormal_and_symmetric(n: int) -> None:
    h = hadamard(n)
    np.testing.assert_allclose(h @ h.T, np.eye(n), atol=1e-5)
    np.testing.assert_array_equal(h, h.T)


def test_hadamard_rejects_non_powers_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        hadamard(24)


@settings(max_examples=50, deadline=None)
@given(blocks=st.integers(1, 4), block=st.sampled_from([2, 4, 8, 16]), n=st.integers(1, 7), seed=st.integers(0, 99))
def test_rotation_preserves_the_product(blocks: int, block: int, n: int, seed: int) -> None:
    r = np.random.default_rng(seed)
    k = blocks * block
    x = r.standard_normal((5, k))
    w = r.standard_normal((k, n))
    rot = np.kron(np.eye(blocks), hadamard(block))
    np.testing.assert_allclose((x @ rot) @ rotate_input_channels(w, block, 0), x @ w, rtol=1e-4, atol=1e-4)
    # the same along axis 1 (Gemm with transB: W is N x K)
    np.testing.assert_allclose(rotate_input_channels(w.T, block, 1).T, rotate_input_channels(w, block, 0), atol=1e-6)


def outlier_model(k: int = 128, n: int = 128):
    r = np.random.default_rng(0)
    w1 = (r.standard_normal((k, k)) / np.sqrt(k)).astype(np.float32)
    w2 = (r.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    w3 = (r.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    gain = np.ones(k, np.float32)
    gain[[3, 77]] = 60.0  # two outlier channels, as transformers' hidden states have
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
        helper.make_node("Mul", ["h", "gain"], ["hg"], name="gain"),
        helper.make_node("MatMul", ["hg", "W2"], ["y"], name="mm2"),
        helper.make_node("MatMul", ["hg", "W3"], ["z"], name="mm3"),
    ]
    m = make(nodes, [("x", F, ["b", k])], [("y", F, ["b", n]), ("z", F, ["b", n])],
             {"W1": w1, "gain": gain, "W2": w2, "W3": w3})  # fmt: skip
    return m, {"x": r.standard_normal((64, k)).astype(np.float32)}


def test_rotation_is_inserted_once_per_activation_and_beats_no_rotation() -> None:
    model, feeds = outlier_model()
    ref = run(model, feeds)
    # one row per sample: auto would keep these small layers weight-only, so integer kernels are asked for
    rotated = DynamicQuantPass(DynamicQuantConfig(rotation="hadamard", rotation_block=32, min_integer_macs=0))(model)
    plain = DynamicQuantPass(DynamicQuantConfig(rotation="none", min_integer_macs=0))(model)
    hadamard_nodes = [n for n in rotated.model.graph.node if n.name.endswith("_Hadamard")]
    assert len(hadamard_nodes) == 2  # x (for mm1) and hg (shared by mm2 and mm3)
    assert not [n for n in plain.model.graph.node if n.name.endswith("_Hadamard")]
    recs = {r.name: r for r in rotated.records}
    assert "rotated" in recs["W2"].reason
    err_rot = [np.linalg.norm(a - b) / np.linalg.norm(a) for a, b in zip(ref, run(rotated.model, feeds), strict=True)]
    err_plain = [np.linalg.norm(a - b) / np.linalg.norm(a) for a, b in zip(ref, run(plain.model, feeds), strict=True)]
    assert max(err_rot) < 0.02
    assert max(err_rot) < 0.5 * min(err_plain), (err_rot, err_plain)


def test_rotation_block_validation() -> None:
    with pytest.raises(ValueError, match="rotation_block"):
        DynamicQuantConfig(rotation_block=24)
    with pytest.raises(ValueError, match="rotation: 'givens'"):
        DynamicQuantConfig(rotation="givens")
