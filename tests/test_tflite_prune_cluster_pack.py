""".tflite models through prune, cluster and pack/unpack (Python API and CLI): the weights of every subgraph
(WHILE bodies too) are rewritten, the output runs in LiteRT and keeps its outputs, packs unpack to the exact
bytes, and broken packs fail with the one-line errors of ONNX packs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

import tensorslim as ts
import tflite_models as tm
from models import cli
from tensorslim.backends.tflite.graph import Graph
from tensorslim.backends.tflite.io import load_model
from tensorslim.errors import InputError
from tensorslim.runtime.litert import LiteRTRuntime


def _write(tmp_path: Path, name: str, payload: bytes) -> Path:
    p = tmp_path / f"{name}.tflite"
    p.write_bytes(payload)
    return p


def _weights(path: Path, op: str) -> list[np.ndarray]:
    """The constant weight (input 1) of every ``op`` in every subgraph."""
    model = load_model(path)
    out = []
    for si in range(len(model.subgraphs)):
        g = Graph(model, si)
        for o in g.sg.operators:
            if g.op_type(o) == op:
                arr = g.constant(int(o.inputs[1]))
                if arr is not None:
                    out.append(arr)
    return out


def _cosine(a: Path, b: Path, feeds: list[dict[str, np.ndarray]]) -> float:
    ra, rb = LiteRTRuntime(a.read_bytes(), threads=1), LiteRTRuntime(b.read_bytes(), threads=1)
    worst = 1.0
    for f in feeds:
        for x, y in zip(ra.run(f), rb.run(f), strict=True):
            x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
            worst = min(worst, float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))))
    return worst


def _rnn_feeds() -> list[dict[str, np.ndarray]]:
    return [{"x": tm.rng(100 + i).uniform(-1, 1, (1, 64)).astype(np.float32)} for i in range(3)]


def _cnn_feeds() -> list[dict[str, np.ndarray]]:
    return [{"image": tm.rng(100 + i).random((1, 12, 12, 3)).astype(np.float32)} for i in range(3)]


def test_prune_reaches_while_body_weights_and_runs(tmp_path: Path) -> None:
    src = _write(tmp_path, "rnn", tm.while_rnn())
    out = tmp_path / "pruned.tflite"
    res = ts.prune(src, out, config=ts.PruneConfig(sparsity=0.5))
    [body] = _weights(out, "FULLY_CONNECTED")  # the FC lives in the WHILE body (subgraph 2)
    assert abs(float(np.mean(body == 0)) - 0.5) < 0.01
    assert [r.action for r in res.records] == ["pruned 50.0% unstructured (magnitude)"]
    assert _cosine(src, out, _rnn_feeds()) > 0.5  # runs in LiteRT; half the weights gone, the output still related
    again = tmp_path / "again.tflite"
    ts.prune(src, again, config=ts.PruneConfig(sparsity=0.5))
    assert again.read_bytes() == out.read_bytes()  # same input, same bytes


def test_prune_nm_pattern_and_global_scope(tmp_path: Path) -> None:
    src = _write(tmp_path, "mlp", tm.mlp())
    out = tmp_path / "nm.tflite"
    ts.prune(src, out, config=ts.PruneConfig(pattern="2:4"))
    for w in _weights(out, "FULLY_CONNECTED"):
        if w.size >= 256:  # the min size
            groups = w.reshape(w.shape[0], -1, 4)  # [out, in]: groups of 4 along the inputs
            assert np.all(np.sum(groups == 0, axis=2) >= 2)
    glob = tmp_path / "global.tflite"
    ts.prune(src, glob, config=ts.PruneConfig(sparsity=0.6, scope="global"))
    pruned = [w for w in _weights(glob, "FULLY_CONNECTED") if w.size >= 256]
    zeros = sum(int(np.sum(w == 0)) for w in pruned) / sum(w.size for w in pruned)
    assert abs(zeros - 0.6) < 0.01
    LiteRTRuntime(glob.read_bytes()).run({"x": np.zeros((1, 64), np.float32)})


def test_cluster_writes_centroids_in_place(tmp_path: Path) -> None:
    src = _write(tmp_path, "cnn", tm.cnn())
    out = tmp_path / "clustered.tflite"
    res = ts.cluster(src, out, config=ts.ClusterConfig(clusters=16))
    done = [r for r in res.records if not r.skipped]
    assert {r.ops for r in done} >= {"CONV_2D", "FULLY_CONNECTED"}
    for w in [*_weights(out, "CONV_2D"), *_weights(out, "FULLY_CONNECTED")]:
        if w.size >= 256:
            assert np.unique(w).size <= 16
    assert out.stat().st_size == src.stat().st_size  # float centroids in place: same tensors, same size
    assert _cosine(src, out, _cnn_feeds()) > 0.95  # k=16 on random weights: about 20 dB SQNR
    per_channel = tmp_path / "pc.tflite"
    ts.cluster(src, per_channel, config=ts.ClusterConfig(clusters=4, granularity="per_channel"))
    for w in _weights(per_channel, "CONV_2D"):
        if w.size >= 256:
            assert max(np.unique(row).size for row in w.reshape(w.shape[0], -1)) <= 4


def test_cluster_while_body_and_pack_shrinks_it(tmp_path: Path) -> None:
    import zstandard

    src = _write(tmp_path, "rnn", tm.while_rnn())
    out = tmp_path / "clustered.tflite"
    ts.cluster(src, out)
    [body] = _weights(out, "FULLY_CONNECTED")
    assert np.unique(body).size <= 16
    assert _cosine(src, out, _rnn_feeds()) > 0.95
    float_pack = ts.pack(src, tmp_path / "float.tslim")
    clustered_pack = ts.pack(out, tmp_path / "clustered.tslim")
    assert float_pack.file_bytes < len(zstandard.ZstdCompressor(level=19).compress(src.read_bytes()))
    assert clustered_pack.file_bytes < 0.3 * src.stat().st_size  # 4-bit palette indices
    ts.unpack(tmp_path / "clustered.tslim", tmp_path / "back.tflite")
    assert (tmp_path / "back.tflite").read_bytes() == out.read_bytes()


@pytest.mark.parametrize("build", [tm.mlp, tm.cnn, tm.while_rnn, tm.lstm, tm.embeddings], ids=lambda f: f.__name__)
def test_pack_unpack_exact_bytes(tmp_path: Path, build: Any) -> None:
    src = _write(tmp_path, "m", build())
    rep = ts.pack(src, tmp_path / "m.tslim", config=ts.PackConfig(compare=True))
    assert rep.file_bytes < rep.baselines["zstd-19"] and rep.onnx_bytes == src.stat().st_size
    model = ts.unpack(tmp_path / "m.tslim", tmp_path / "back.tflite")
    assert (tmp_path / "back.tflite").read_bytes() == src.read_bytes()
    assert len(model.subgraphs) == len(load_model(src).subgraphs)
    ts.pack(src, tmp_path / "again.tslim", config=ts.PackConfig(compare=True, workers=1))  # threads change nothing
    assert (tmp_path / "again.tslim").read_bytes() == (tmp_path / "m.tslim").read_bytes()


def test_pack_of_a_pruned_model_stores_a_mask(tmp_path: Path) -> None:
    src = _write(tmp_path, "rnn", tm.while_rnn())
    ts.prune(src, tmp_path / "p.tflite", config=ts.PruneConfig(sparsity=0.75))
    rep = ts.pack(tmp_path / "p.tflite", tmp_path / "p.tslim")
    assert "mask" in rep.parts and rep.file_bytes < ts.pack(src, tmp_path / "f.tslim").file_bytes * 0.5


def test_broken_tflite_packs_fail_like_onnx_ones(tmp_path: Path) -> None:
    src = _write(tmp_path, "cnn", tm.cnn())
    packed = tmp_path / "m.tslim"
    ts.pack(src, packed)
    data = packed.read_bytes()
    cut = tmp_path / "cut.tslim"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        ts.unpack(cut)
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    bad = tmp_path / "bad.tslim"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(InputError, match="checksum mismatch"):
        ts.unpack(bad, tmp_path / "never.tflite")
    assert not (tmp_path / "never.tflite").exists()
    r = cli("unpack", str(cut), "-o", str(tmp_path / "x.tflite"))
    assert r.returncode == 2 and "truncated or corrupt" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_refusals_name_the_fix(tmp_path: Path) -> None:
    src = _write(tmp_path, "cnn", tm.cnn())
    with pytest.raises(InputError, match="method magnitude"):
        ts.prune(src, tmp_path / "o.tflite", config=ts.PruneConfig(method="wanda"))
    with pytest.raises(InputError, match="drop the data"):
        ts.cluster(src, tmp_path / "o.tflite", data=[{"image": np.zeros((1, 12, 12, 3), np.float32)}])
    with pytest.raises(InputError, match="channel pruning"):
        ts.prune_channels(src, tmp_path / "o.tflite")
    with pytest.raises(InputError, match="not a ClusterConfig"):
        ts.cluster(src, tmp_path / "o.tflite", config=ts.PruneConfig())  # type: ignore[arg-type]


def test_cli_prune_cluster_pack_unpack(tmp_path: Path) -> None:
    src = _write(tmp_path, "rnn", tm.while_rnn())
    r = cli("prune", str(src), "-o", str(tmp_path / "p.tflite"), "--sparsity", "0.5", "--json", "-")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["weights"][0]["action"].startswith("pruned 50.0%")
    r = cli("cluster", str(tmp_path / "p.tflite"), "-o", str(tmp_path / "c.tflite"), "--clusters", "8")
    assert r.returncode == 0, r.stderr
    r = cli("pack", str(tmp_path / "c.tflite"), "-o", str(tmp_path / "c.tslim"), "--compare", "--json", "-")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["file_bytes"] < json.loads(r.stdout)["baselines"]["zstd-19"]
    r = cli("unpack", str(tmp_path / "c.tslim"), "-o", str(tmp_path / "u.onnx"))
    assert r.returncode == 2 and "name the output *.tflite" in r.stderr
    r = cli("unpack", str(tmp_path / "c.tslim"), "-o", str(tmp_path / "u.tflite"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "u.tflite").read_bytes() == (tmp_path / "c.tflite").read_bytes()
    r = cli("compress", str(src), "-o", str(tmp_path / "x.tslim"))
    assert r.returncode == 2 and "then pack" in r.stderr


def test_a_rewritten_manifest_with_a_valid_checksum_is_refused(tmp_path: Path) -> None:
    from tensorslim.pack.format import read_container, write_container

    src = _write(tmp_path, "rnn", tm.while_rnn())
    ts.pack(src, tmp_path / "m.tslim")
    c = read_container(tmp_path / "m.tslim")
    cases = {
        "outside": lambda e: e.update(start=10**9),
        "dims": lambda e: e.update(dims="x"),
        "huge": lambda e: e.update(dims=[2**40]),
        "shape": lambda e: e.update(dims=[e["dims"][0] - 1, *e["dims"][1:]]),
    }
    for name, change in cases.items():
        manifest = json.loads(json.dumps(c.manifest))
        change(manifest["tensors"][0])
        bad = tmp_path / f"{name}.tslim"
        write_container(bad, manifest, c.body)
        with pytest.raises(InputError, match="corrupt|refusing"):
            ts.unpack(bad, tmp_path / f"{name}.tflite")
        assert not (tmp_path / f"{name}.tflite").exists()
