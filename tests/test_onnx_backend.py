"""The ONNX backend: loading with clear errors, atomic saving, external data, weight enumeration."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from models import F, conv_model, make, matmul_model, run
from tensorslim.backends.onnx import WeightRole, find_weights, load_model, save_model
from tensorslim.errors import InputError


def test_load_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_model(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_text("this is not a model at all " * 10)
    with pytest.raises(InputError, match="not a readable ONNX model|holds no graph nodes"):
        load_model(junk)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_model(empty)
    with pytest.raises(InputError, match="is a folder"):
        load_model(tmp_path)


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.95])
def test_truncated_model_is_rejected(tmp_path: Path, fraction: float) -> None:
    model, _ = conv_model()
    data = model.SerializeToString()
    p = tmp_path / "trunc.onnx"
    p.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(InputError, match=str(p.name)):
        load_model(p)


def test_checker_failure_is_an_input_error(tmp_path: Path) -> None:
    model, _ = conv_model()
    model.graph.node[0].input[0] = "not_defined_anywhere"
    p = tmp_path / "bad.onnx"
    onnx.save(model, str(p))
    with pytest.raises(InputError, match="checker"):
        load_model(p)


def test_save_is_atomic_and_round_trips(tmp_path: Path) -> None:
    model, feeds = matmul_model()
    out = save_model(model, tmp_path / "m.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary left behind
    np.testing.assert_array_equal(run(out, feeds)[0], run(model, feeds)[0])


def test_external_data_save_and_load(tmp_path: Path) -> None:
    model, feeds = matmul_model(k=256, n=256)
    out = save_model(model, tmp_path / "ext.onnx", external_data=True)
    assert (tmp_path / "ext.onnx.data").stat().st_size == 256 * 256 * 4
    assert out.stat().st_size < 10_000
    loaded = load_model(out)
    np.testing.assert_array_equal(
        numpy_helper.to_array(loaded.graph.initializer[0]), numpy_helper.to_array(model.graph.initializer[0])
    )
    np.testing.assert_array_equal(run(out, feeds)[0], run(model, feeds)[0])
    (tmp_path / "ext.onnx.data").unlink()
    with pytest.raises(InputError, match="external data file"):
        load_model(out)



def test_structure_only_load_leaves_external_tensors_as_references(tmp_path: Path) -> None:
    model, _ = matmul_model(k=256, n=256)
    out = save_model(model, tmp_path / "ext.onnx", external_data=True)
    (tmp_path / "ext.onnx.data").unlink()  # never opened by a structure-only load
    graph_only = load_model(out, check=False, external_data=False)
    w = graph_only.graph.initializer[0]
    assert w.data_location == onnx.TensorProto.EXTERNAL and not w.raw_data
    assert [n.op_type for n in graph_only.graph.node] == [n.op_type for n in model.graph.node]
    with pytest.raises(InputError, match="external data file"):
        load_model(out)


def test_external_tensors_inside_subgraph_constants_are_read(tmp_path: Path) -> None:
    big = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "c")
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["k"], value=big)], "then", [],
        [helper.make_tensor_value_info("k", onnx.TensorProto.FLOAT, [64, 64])],
    )  # fmt: skip
    node = helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [64, 64])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    from onnx.external_data_helper import convert_model_to_external_data

    convert_model_to_external_data(model, location="if.onnx.data", size_threshold=1024, convert_attribute=True)
    out = tmp_path / "if.onnx"
    onnx.save(model, str(out))
    stored = onnx.load(str(out), load_external_data=False).graph.node[0].attribute[0].g.node[0].attribute[0].t
    assert stored.data_location == onnx.TensorProto.EXTERNAL  # the case the loader must find
    loaded = load_model(out)
    value = loaded.graph.node[0].attribute[0].g.node[0].attribute[0].t
    np.testing.assert_array_equal(numpy_helper.to_array(value), numpy_helper.to_array(big))
    (tmp_path / "if.onnx.data").rename(tmp_path / "elsewhere.data")
    with pytest.raises(InputError, match="external data file"):
        load_model(out)

def test_unwritable_output_folder(tmp_path: Path) -> None:
    model, _ = matmul_model()
    with pytest.raises(InputError, match="cannot write|writing failed"):
        save_model(model, Path("/proc/tensorslim-test.onnx"))


def test_find_weights_roles_and_axes() -> None:
    r = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "Wc"], ["c"], name="conv"),
        helper.make_node("Flatten", ["c"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "Wg"], ["g"], name="gemm", transB=1),
        helper.make_node("MatMul", ["g", "Wm"], ["m"], name="mm"),
        helper.make_node("Gather", ["E", "ids"], ["e"], name="gather"),
        helper.make_node(
            "Constant",
            [],
            ["Wk"],
            name="k",
            value=numpy_helper.from_array(r.standard_normal((8, 4)).astype(np.float32)),
        ),
        helper.make_node("MatMul", ["m", "Wk"], ["y"], name="mm2"),
    ]
    inits = {
        "Wc": r.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "Wg": r.standard_normal((6, 4 * 6 * 6)).astype(np.float32),
        "Wm": r.standard_normal((6, 8)).astype(np.float32),
        "E": r.standard_normal((10, 5)).astype(np.float32),
    }
    model = make(nodes, [("x", F, [1, 3, 8, 8]), ("ids", onnx.TensorProto.INT64, [2])],
                 [("y", F, [1, 4]), ("e", F, [2, 5])], inits)  # fmt: skip
    got = {w.name: (w.source, w.primary.role, w.primary.channel_axis) for w in find_weights(model)}
    assert got == {
        "Wc": ("initializer", WeightRole.CONV, 0),
        "Wg": ("initializer", WeightRole.GEMM, 0),
        "Wm": ("initializer", WeightRole.MATMUL, 1),
        "E": ("initializer", WeightRole.EMBEDDING, 1),  # per feature
        "Wk": ("constant", WeightRole.MATMUL, 1),
    }


def test_quantize_never_touches_the_input_file(tmp_path: Path) -> None:
    from tensorslim import quantize

    model, _ = matmul_model(k=128, n=128)
    src = save_model(model, tmp_path / "in.onnx")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    quantize(src, tmp_path / "out.onnx")
    quantize(src, tmp_path / "out2.onnx")
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest
    assert (tmp_path / "out.onnx").read_bytes() == (tmp_path / "out2.onnx").read_bytes()
    with pytest.raises(InputError, match="output path is the input"):
        quantize(src, src)


def test_batchnorm_folds_into_conv_exactly() -> None:
    from tensorslim.passes.fold_batchnorm import FoldBatchNormPass

    r = np.random.default_rng(0)
    c = 8
    nodes = [
        helper.make_node("Conv", ["x", "W", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "beta", "mu", "var"], ["y"], name="bn", epsilon=1e-3),
    ]
    inits = {
        "W": r.standard_normal((c, 3, 3, 3)).astype(np.float32),
        "b": r.standard_normal(c).astype(np.float32),
        "g": r.uniform(0.5, 2, c).astype(np.float32),
        "beta": r.standard_normal(c).astype(np.float32),
        "mu": r.standard_normal(c).astype(np.float32),
        "var": r.uniform(0.1, 3, c).astype(np.float32),
    }
    model = make(nodes, [("x", F, [2, 3, 6, 6])], [("y", F, [2, c, 6, 6])], inits)
    res = FoldBatchNormPass()(model)
    assert [n.op_type for n in res.model.graph.node] == ["Conv"]
    assert {t.name for t in res.model.graph.initializer}.isdisjoint({"g", "beta", "mu", "var", "W", "b"})
    feeds = {"x": r.standard_normal((2, 3, 6, 6)).astype(np.float32)}
    np.testing.assert_allclose(run(res.model, feeds)[0], run(model, feeds)[0], rtol=1e-4, atol=1e-4)


def test_graph_index_maps_producers_readers_and_subgraphs() -> None:
    from tensorslim.backends.onnx.graph import GraphIndex, replace_nodes

    w = numpy_helper.from_array(np.ones((2,), np.float32), "w")
    inner_w = numpy_helper.from_array(np.ones((2,), np.float32), "inner_w")
    body = helper.make_graph(
        [helper.make_node("Add", ["y", "inner_w"], ["z"], name="inner")], "then", [],
        [helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [2])], initializer=[inner_w],
    )  # fmt: skip
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["y"], name="square"),
        helper.make_node("Clip", ["y", "", "w"], ["c"], name="clip"),  # an absent optional input
        helper.make_node("If", ["cond"], ["out"], name="branch", then_branch=body, else_branch=body),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [2])], initializer=[w],
    )  # fmt: skip
    index = GraphIndex(graph)
    assert [n.name for n in index.consumers["x"]] == ["square", "square"] and not index.single_use("x")
    assert [(n.name, i) for n, i in index.uses["w"]] == [("clip", 2)] and index.single_use("w")
    assert index.producer["y"].name == "square" and index.output_index["out"] == 0
    assert "" not in index.consumers and set(index.initializers) == {"w"}
    assert [n.name for n in index.readers("y")] == ["clip"] and index.outputs == {"out"}
    deep = GraphIndex(graph, subgraphs=True)
    assert [n.name for n in deep.readers("y")] == ["clip", "inner", "inner"]  # both branches read y
    assert deep.producer["z"].name == "inner" and set(deep.initializers) == {"w", "inner_w"}
    replace_nodes(graph, [graph.node[2], graph.node[0]])
    assert [n.name for n in graph.node] == ["branch", "square"]
