"""Weight clustering: k-means maths and the pass (indices + codebook expanded once, at session load)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import numpy_helper

from models import conv_model, gather_model, matmul_model, mlp_model, optimized_op_types, rng, run
from tensorslim.algorithms.kmeans import KMeansInit, kmeans_rows, sse
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.cluster import ClusterConfig, ClusterPass, plan_cluster
from tensorslim.passes.prune import PruneConfig, PrunePass


def _init_sse(values: np.ndarray, k: int, init: str, seed: int) -> np.ndarray:
    res = kmeans_rows(values, k, init=init, max_iter=0, seed=seed)
    return res.sse


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 4), st.integers(1, 200), st.integers(2, 16), st.sampled_from(list(KMeansInit)), st.integers(0, 99)
)
def test_kmeans_never_increases_the_error_of_its_init(rows: int, n: int, k: int, init: KMeansInit, seed: int) -> None:
    v = rng(seed).standard_normal((rows, n)) * rng(seed + 1).uniform(0.1, 10, (rows, 1))
    start = _init_sse(v, k, init, seed)
    res = kmeans_rows(v, k, init=init, seed=seed)
    assert (res.sse <= start * (1 + 1e-9) + 1e-12).all()
    assert (np.diff(res.centroids, axis=1) >= 0).all()
    np.testing.assert_allclose(sse(v, res.centroids), res.sse, rtol=1e-9, atol=1e-12)


def test_kmeans_weighted_error_is_minimised_for_the_weights() -> None:
    v = rng(0).standard_normal((1, 500))
    wts = np.where(v > 0, 100.0, 1.0)
    plain = kmeans_rows(v, 4, seed=0)
    weighted = kmeans_rows(v, 4, seed=0, sample_weight=wts)
    assert sse(v, weighted.centroids, wts)[0] < 0.9 * sse(v, plain.centroids, wts)[0]
    assert weighted.centroids.mean() > plain.centroids.mean()  # the centroids move to the heavy side


def _values_per_channel(w: np.ndarray, axis: int) -> int:
    return max(len(np.unique(np.take(w, i, axis=axis))) for i in range(w.shape[axis]))


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
def test_cluster_pass_stores_indices_and_runs_the_reconstruction(granularity: str, tmp_path: Path) -> None:
    model, feeds = conv_model()
    before = model.SerializeToString()
    cfg = ClusterConfig(clusters=8, granularity=granularity)
    plans = [p for p in plan_cluster(model, cfg) if not p.skipped]
    res = ClusterPass(cfg)(model)
    assert model.SerializeToString() == before
    onnx.checker.check_model(res.model)
    stored = {t.name: numpy_helper.to_array(t) for t in res.model.graph.initializer}
    assert stored["W_cluster_indices"].dtype == np.uint8 and stored["W_cluster_indices"].shape == (32, 16, 3, 3)
    assert stored["W_codebook"].size == (8 if granularity == "per_tensor" else 32 * 8)
    assert "W" not in stored
    recon = plans[0].reconstruct()
    assert _values_per_channel(recon, 0) <= 8 and len(np.unique(recon)) <= (8 if granularity == "per_tensor" else 256)
    x = feeds["x"]
    ref_model, _ = conv_model()
    for t in ref_model.graph.initializer:
        if t.name == "W":
            t.CopyFrom(numpy_helper.from_array(recon, "W"))
    np.testing.assert_array_equal(run(res.model, {"x": x})[0], run(ref_model, {"x": x})[0])
    # the expansion happens once, at session load: the graph ONNX Runtime runs has no Gather or Cast left
    ops = optimized_op_types(res.model, tmp_path)
    assert "Gather" not in ops and "Cast" not in ops and "Conv" in ops


def test_clustering_preserves_pruned_zeros() -> None:
    model, feeds = matmul_model(k=64, n=48)
    pruned = PrunePass(PruneConfig(sparsity=0.5))(model).model
    zeros = numpy_helper.to_array(pruned.graph.initializer[0]) == 0
    plan = next(p for p in plan_cluster(pruned, ClusterConfig(clusters=4)) if not p.skipped)
    recon = plan.reconstruct()
    assert (recon[zeros] == 0).all() and (recon[~zeros] != 0).all()
    assert plan.labels is not None and (plan.labels[zeros] == 0).all()


def test_embeddings_and_fp16_codebooks() -> None:
    model, feeds = gather_model()
    res = ClusterPass(ClusterConfig(clusters=16, granularity="per_channel", codebook_dtype="float16"))(model)
    cb = next(t for t in res.model.graph.initializer if t.name.endswith("_codebook"))
    assert cb.data_type == onnx.TensorProto.FLOAT16 and cb.dims == [32 * 16]
    out = run(res.model, feeds)[0]
    assert out.dtype == np.float32 and np.corrcoef(out.ravel(), run(model, feeds)[0].ravel())[0, 1] > 0.99


def test_activation_aware_clustering_lowers_the_output_error() -> None:
    model, feeds = mlp_model(hidden=64)
    x = rng(4).standard_normal((256, 32)).astype(np.float32) * np.linspace(0.05, 3, 32).astype(np.float32)
    data = Dataset({"x": x})
    ref = run(model, {"x": x[:64]})[0]
    cfg = ClusterConfig(clusters=4, granularity="per_channel", min_size=0)
    plain = run(ClusterPass(cfg)(model).model, {"x": x[:64]})[0]
    aware = run(ClusterPass(cfg, data)(model).model, {"x": x[:64]})[0]
    assert np.linalg.norm(aware - ref) < 0.9 * np.linalg.norm(plain - ref)


def test_output_is_deterministic_for_a_seed() -> None:
    model, _ = conv_model()
    a = ClusterPass(ClusterConfig(seed=3))(model).model.SerializeToString()
    b = ClusterPass(ClusterConfig(seed=3))(model).model.SerializeToString()
    assert a == b


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clusters": 1}, "clusters: must be an integer from 2 to 256, got 1"),
        ({"clusters": 257}, "clusters: must be an integer from 2 to 256, got 257"),
        ({"init": "random"}, "init: 'random' is not one of kmeans\\+\\+, linear, density"),
        ({"granularity": "per_row"}, "granularity: 'per_row' is not one of per_channel, per_tensor"),
        ({"codebook_dtype": "int8"}, "codebook_dtype: 'int8' is not one of float32, float16"),
    ],
)
def test_bad_cluster_config(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClusterConfig(**kwargs)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_recurrent_weights_are_clustered(op: str) -> None:
    from models import rnn_model

    m, feeds = rnn_model(op)
    for gran in ("per_tensor", "per_channel"):
        res = ClusterPass(ClusterConfig(clusters=16, granularity=gran))(m)
        done = {r.name for r in res.records if not r.skipped}
        assert done == {"W", "R"}
        inits = {t.name for t in res.model.graph.initializer}
        assert "W" not in inits and "W_cluster_indices" in inits  # codes + codebook, expanded at load
        cos = _cos(run(m, feeds)[0], run(res.model, feeds)[0])
        assert cos > 0.97, (gran, cos)  # k=16 on random Gaussian weights: about 20 dB


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_recurrent_weights_behind_slice_chains_in_if_bodies_are_clustered() -> None:
    from test_recurrent_quant import _feeds, _if_lstm_model

    m = _if_lstm_model()
    res = ClusterPass(ClusterConfig(clusters=16))(m)
    assert len([r for r in res.records if not r.skipped]) == 4  # W and R of both branches
    onnx.checker.check_model(res.model)
    assert res.model.ByteSize() < 0.35 * m.ByteSize()
    for flag in (True, False):
        for a, b in zip(run(m, _feeds(flag)), run(res.model, _feeds(flag)), strict=True):
            assert _cos(a, b) > 0.99
