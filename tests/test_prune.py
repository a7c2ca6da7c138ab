"""Pruning: the maths (masks, N:M, global ranking, OBS update) and the passes on tiny models in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from models import F, gemm_model, make, matmul_model, mlp_model, rng, run
from tensorslim.algorithms.pruning import global_thresholds, magnitude_mask, nm_mask, obs_update
from tensorslim.errors import InputError, UnsupportedModelError
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.channel_prune import ChannelPruneConfig, ChannelPrunePass, plan_channel_prune
from tensorslim.passes.prune import PruneConfig, PrunePass, plan_prune


def weights(m: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.floats(0.0, 0.99), st.integers(0, 10))
def test_magnitude_mask_prunes_exactly_the_smallest(n: int, sparsity: float, seed: int) -> None:
    s = np.abs(rng(seed).standard_normal(n))
    mask = magnitude_mask(s, sparsity)
    assert int((~mask).sum()) == round(sparsity * n)
    if mask.any() and (~mask).any():
        assert s[~mask].max() <= s[mask].min()


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([(1, 2), (2, 4), (4, 8), (1, 4)]), st.integers(1, 6), st.integers(1, 5), st.integers(0, 9))
def test_nm_pattern_holds_in_every_group(nm: tuple[int, int], rows: int, groups: int, seed: int) -> None:
    n, m = nm
    s = rng(seed).standard_normal((rows, groups * m))
    mask = nm_mask(s, n, m)
    assert (mask.reshape(rows, groups, m).sum(axis=2) == n).all()
    kept = np.where(mask, s, np.inf).reshape(rows, groups, m).min(axis=2)
    dropped = np.where(mask, -np.inf, s).reshape(rows, groups, m).max(axis=2)
    assert (dropped <= kept).all()


def test_global_ranking_respects_the_cap_and_the_total() -> None:
    scores = [np.abs(rng(0).standard_normal(1000)) * 0.01, np.abs(rng(1).standard_normal(1000))]
    sp = global_thresholds(scores, 0.5, max_layer_sparsity=0.8)
    assert sp[0] == pytest.approx(0.8)  # the small-magnitude layer is held at the cap
    assert (sp[0] + sp[1]) / 2 == pytest.approx(0.5)
    with pytest.raises(ValueError, match="max_layer_sparsity: 0.3 caps pruning"):
        global_thresholds(scores, 0.5, max_layer_sparsity=0.3)


def test_obs_update_beats_plain_masking_on_the_layer_output() -> None:
    r = rng(3)
    x = r.standard_normal((512, 32)) @ r.standard_normal((32, 32))  # correlated inputs
    w = r.standard_normal((16, 32))
    mask = magnitude_mask(np.abs(w), 0.5)
    updated = obs_update(w, mask, x.T @ x, damp=1e-4)
    assert (updated[~mask] == 0).all()
    err_plain = np.linalg.norm(x @ (w * mask).T - x @ w.T)
    err_obs = np.linalg.norm(x @ updated.T - x @ w.T)
    best = np.zeros_like(w)  # the per-row least-squares optimum for this mask: a lower bound
    for i in range(w.shape[0]):
        best[i, mask[i]] = np.linalg.lstsq(x[:, mask[i]], x @ w[i], rcond=None)[0]
    err_best = np.linalg.norm(x @ best.T - x @ w.T)
    assert err_best - 1e-6 <= err_obs < 0.97 * err_plain


def test_unstructured_pass_prunes_exactly_and_keeps_the_graph() -> None:
    model, feeds = matmul_model(k=64, n=48)
    before = model.SerializeToString()
    res = PrunePass(PruneConfig(sparsity=0.5))(model)
    assert model.SerializeToString() == before  # input untouched
    w = weights(res.model)["W"]
    assert w.shape == (64, 48) and int((w == 0).sum()) == 64 * 48 // 2
    assert [n.op_type for n in res.model.graph.node] == ["MatMul"]
    assert res.records[0].action == "pruned 50.0% unstructured (magnitude)"
    np.testing.assert_allclose(run(res.model, feeds)[0], feeds["x"] @ w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_2_of_4_runs_along_the_reduction_axis(trans_b: int) -> None:
    model, feeds = gemm_model(trans_b=trans_b)
    res = PrunePass(PruneConfig(pattern="2:4"))(model)
    w = weights(res.model)["W"]
    out_in = w if trans_b else w.T  # the reduction (64 inputs) along the columns
    assert (out_in.reshape(32, 16, 4) != 0).sum(axis=2).max() <= 2
    assert (out_in != 0).mean() == pytest.approx(0.5)
    run(res.model, feeds)


def _data(feeds: dict[str, np.ndarray], n: int = 64, seed: int = 5) -> Dataset:
    k, v = next(iter(feeds.items()))
    return Dataset({k: rng(seed).standard_normal((n, *v.shape[1:])).astype(np.float32)})


def test_sparsegpt_holds_the_output_better_than_magnitude() -> None:
    model, feeds = mlp_model(hidden=64)
    data = _data(feeds)
    ref = run(model, feeds)[0]
    errs = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        res = PrunePass(PruneConfig(sparsity=0.6, method=method, min_size=0), data)(model)
        for w in weights(res.model).values():
            if w.ndim == 2:
                assert (w == 0).mean() == pytest.approx(0.6, abs=0.01)  # per-row rounding
        errs[method] = float(np.linalg.norm(run(res.model, feeds)[0] - ref))
    assert errs["sparsegpt"] < errs["magnitude"]


def test_activation_aware_needs_data() -> None:
    model, _ = matmul_model()
    with pytest.raises(InputError, match="method wanda needs calibration data; pass --data calib.npz"):
        plan_prune(model, PruneConfig(method="wanda"))


def test_a_pattern_no_layer_can_take_is_a_clear_error() -> None:
    model, _ = matmul_model(k=6, n=64)
    with pytest.raises(UnsupportedModelError, match="pattern 4:8 needs the reduction axis to be a multiple of 8"):
        PrunePass(PruneConfig(pattern="4:8", min_size=0))(model)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sparsity": 1.0}, r"sparsity: must be in \[0, 1\), got 1.0"),
        ({"sparsity": -0.1}, r"sparsity: must be in \[0, 1\), got -0.1"),
        ({"pattern": "4:2"}, "pattern: '4:2' needs 0 < N < M <= 64"),
        ({"pattern": "dense"}, "pattern: 'dense' is not one of unstructured, N:M"),
        ({"pattern": "2:4", "sparsity": 0.7}, "sparsity: 0.7 conflicts with pattern 2:4"),
        ({"method": "random"}, "method: 'random' is not one of magnitude, wanda, sparsegpt"),
    ],
)
def test_bad_prune_config(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PruneConfig(**kwargs)


def _conv_chain(residual: bool = False) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    r = rng(7)
    inits = {
        "W1": r.standard_normal((32, 8, 3, 3)).astype(np.float32) * 0.3,
        "B1": r.standard_normal(32).astype(np.float32),
        "s": r.uniform(0.5, 1.5, 32).astype(np.float32), "b": r.standard_normal(32).astype(np.float32),
        "mu": r.standard_normal(32).astype(np.float32), "var": r.uniform(0.5, 2, 32).astype(np.float32),
        "Wd": r.standard_normal((32, 1, 3, 3)).astype(np.float32) * 0.3,
        "W2": r.standard_normal((16, 32, 1, 1)).astype(np.float32) * 0.3,
        "Wf": r.standard_normal((10, 16)).astype(np.float32),
    }  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "s", "b", "mu", "var"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "Wd"], ["dw"], name="dw", pads=[1, 1, 1, 1], group=32),
        helper.make_node("Conv", ["dw", "W2"], ["c2"], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "Wf"], ["y"], name="fc", transB=1),
    ]
    if residual:
        nodes.insert(5, helper.make_node("Add", ["c2", "c2"], ["c2r"], name="res"))
        nodes[6] = helper.make_node("Relu", ["c2r"], ["r2"], name="relu2")
    m = make(nodes, [("x", F, ["b", 8, 8, 8])], [("y", F, ["b", 10])], inits)
    return m, {"x": r.standard_normal((4, 8, 8, 8)).astype(np.float32)}


def test_channel_pruning_shrinks_every_tensor_on_the_path() -> None:
    model, feeds = _conv_chain()
    res = ChannelPrunePass(ChannelPruneConfig(ratio=0.5))(model)
    onnx.checker.check_model(res.model)
    w = weights(res.model)
    assert w["W1"].shape == (16, 8, 3, 3) and w["B1"].shape == (16,)
    assert all(w[k].shape == (16,) for k in ("s", "b", "mu", "var"))
    assert w["Wd"].shape == (16, 1, 3, 3) and w["W2"].shape == (8, 16, 1, 1) and w["Wf"].shape == (10, 8)
    dw = next(n for n in res.model.graph.node if n.name == "dw")
    assert helper.get_attribute_value(next(a for a in dw.attribute if a.name == "group")) == 16
    assert run(res.model, feeds)[0].shape == (4, 10)
    assert {r.name: r.action for r in res.records}["Wf"] == "skipped"  # its channels are the graph output


def test_channel_pruning_takes_weights_written_as_constant_nodes() -> None:
    """Paddle and some TensorFlow converters write weights as Constant nodes: they prune like initializers
    (the pass said the model had no layer with a constant weight)."""
    model, feeds = _conv_chain()
    g = model.graph
    consts = [helper.make_node("Constant", [], [t.name], value=t) for t in g.initializer]
    nodes = consts + list(g.node)
    del g.initializer[:]
    del g.node[:]
    g.node.extend(nodes)
    before = run(model, feeds)[0]
    res = ChannelPrunePass(ChannelPruneConfig(ratio=0.5))(model)
    onnx.checker.check_model(res.model)
    w = weights(res.model)
    assert w["W1"].shape == (16, 8, 3, 3) and w["W2"].shape == (8, 16, 1, 1) and w["Wd"].shape == (16, 1, 3, 3)
    assert not any(n.op_type == "Constant" for n in res.model.graph.node)
    assert run(res.model, feeds)[0].shape == before.shape


def test_channel_pruning_keeps_exactly_what_the_plan_says() -> None:
    model, feeds = _conv_chain()
    plan = {g.name: g for g in plan_channel_prune(model, ChannelPruneConfig(ratio=0.5))}
    keep = plan["conv1"].keep
    assert keep is not None and len(keep) == 16
    res = ChannelPrunePass(ChannelPruneConfig(ratio=0.5))(model)
    np.testing.assert_array_equal(weights(res.model)["W1"], weights(model)["W1"][keep])


def test_residual_add_is_skipped_with_its_reason() -> None:
    model, feeds = _conv_chain(residual=True)
    groups = {g.name: g for g in plan_channel_prune(model, ChannelPruneConfig())}
    assert groups["conv2"].skip_reason == "channels meet another activation in Add 'res' (residual or merge)"
    assert groups["conv1"].keep is not None
    run(ChannelPrunePass()(model).model, feeds)


def test_least_squares_refit_recovers_the_output() -> None:
    model, feeds = mlp_model(hidden=64)
    data = _data(feeds, n=256)
    ref = run(model, feeds)[0]
    plain = ChannelPrunePass(ChannelPruneConfig(ratio=0.5, refit=False), data)(model).model
    refit = ChannelPrunePass(ChannelPruneConfig(ratio=0.5), data)(model).model
    assert weights(refit)["W2"].shape == (10, 32)
    assert np.linalg.norm(run(refit, feeds)[0] - ref) < 0.8 * np.linalg.norm(run(plain, feeds)[0] - ref)


def test_bad_channel_config() -> None:
    with pytest.raises(ValueError, match=r"ratio: must be in \[0, 1\), got 1.0"):
        ChannelPruneConfig(ratio=1.0)


@pytest.mark.slow
def test_digits_channel_pruning_holds_top1_within_a_point() -> None:
    from tensorslim.evaluate import evaluate, load_npz
    from tensorslim.examples import example_calib_data_path, example_model_path, example_test_data_path
    from tensorslim.runtime.ort import OrtRuntime

    src = example_model_path()
    ref = OrtRuntime(src)
    calib = load_npz(example_calib_data_path(), ref.inputs)
    res = ChannelPrunePass(ChannelPruneConfig(ratio=0.5), calib)(onnx.load(str(src)))
    o = evaluate(ref, OrtRuntime(res.model), load_npz(example_test_data_path(), ref.inputs)).outputs[0]
    assert o.reference_accuracy is not None and o.candidate_accuracy is not None
    assert o.reference_accuracy - o.candidate_accuracy <= 0.01
    assert res.model.ByteSize() < 0.3 * onnx.load(str(src)).ByteSize()
