"""Calibration and evaluation data: npz files and folders, image folders, feed-dict iterables, ragged shapes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from PIL import Image

from models import F, cli, make, rng, run
from tensorslim.api import load_calibration, quantize
from tensorslim.backends.onnx import save_model
from tensorslim.errors import InputError
from tensorslim.evaluate.data import Dataset, from_feeds, load_npz, load_npz_folder
from tensorslim.evaluate.images import ImagePreprocess, load_images, preprocess_image
from tensorslim.passes.static_quant import StaticQuantConfig
from tensorslim.runtime.ort import OrtRuntime

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def conv_image_model(layout: str = "NCHW", h: int = 6, w: int = 4) -> onnx.ModelProto:
    """A 3-channel Conv on a fixed H x W image (NHWC models transpose first)."""
    wt = rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32)
    conv = helper.make_node("Conv", ["xc", "W"], ["y"], name="conv", pads=[1, 1, 1, 1])
    if layout == "NCHW":
        conv = helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1])
        return make([conv], [("x", F, ["n", 3, h, w])], [("y", F, ["n", 8, h, w])], {"W": wt})
    tr = helper.make_node("Transpose", ["x"], ["xc"], perm=[0, 3, 1, 2])
    return make([tr, conv], [("x", F, ["n", h, w, 3])], [("y", F, ["n", 8, h, w])], {"W": wt})


def seq_model(k: int = 16, n: int = 32) -> onnx.ModelProto:
    """x[batch, seq, k] @ W -> Relu -> @ W2: any sequence length."""
    r = rng(1)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "W2"], ["y"], name="mm2"),
    ]
    inits = {"W": r.standard_normal((k, n)).astype(np.float32), "W2": r.standard_normal((n, k)).astype(np.float32)}
    return make(nodes, [("x", F, ["b", "s", k])], [("y", F, ["b", "s", k])], inits)


def specs(model: onnx.ModelProto) -> list:
    return OrtRuntime(model).inputs


def write_png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


@pytest.fixture
def image_dir(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    d = tmp_path / "images"
    d.mkdir()
    r = np.random.default_rng(5)
    pix = [r.integers(0, 256, size=(6, 4, 3)) for _ in range(3)]
    for i, p in enumerate(pix):  # written out of order: the loader sorts by name
        write_png(d / f"img_{2 - i}.png", p)
    (d / "notes.txt").write_text("not an image, ignored")
    return d, pix[::-1]


# --------------------------------------------------------------------------- images


def test_image_folder_gives_the_declared_tensor(image_dir: tuple[Path, list[np.ndarray]]) -> None:
    folder, pix = image_dir
    pre = ImagePreprocess(size=(6, 4), mean=MEAN, std=STD)
    ds = load_images(folder, specs(conv_image_model()), pre)
    x = ds.inputs["x"]
    assert x.shape == (3, 3, 6, 4) and x.dtype == np.float32
    want = np.stack([((p / 255.0 - np.array(MEAN)) / np.array(STD)).transpose(2, 0, 1) for p in pix])
    np.testing.assert_allclose(x, want, rtol=1e-5, atol=1e-5)
    assert "3 image(s)" in ds.notes[0]


def test_nhwc_grey_bgr_and_size_from_model(tmp_path: Path) -> None:
    px = np.arange(6 * 4 * 3).reshape(6, 4, 3) % 256
    f = write_png(tmp_path / "a.png", px)
    nhwc = preprocess_image(f, ImagePreprocess(layout="NHWC", scale=1.0), (6, 4))
    np.testing.assert_array_equal(nhwc, px.astype(np.float32))
    bgr = preprocess_image(f, ImagePreprocess(layout="NHWC", color="BGR", scale=1.0), (6, 4))
    np.testing.assert_array_equal(bgr, px[:, :, ::-1].astype(np.float32))
    grey = preprocess_image(f, ImagePreprocess(color="L", scale=1.0), (6, 4))
    assert grey.shape == (1, 6, 4)
    crop = preprocess_image(f, ImagePreprocess(resize="center_crop", size=(3, 3)), (3, 3))
    assert crop.shape == (3, 3, 3)
    ds = load_images(tmp_path, specs(conv_image_model("NHWC")), ImagePreprocess(layout="NHWC"))  # size from model
    assert ds.inputs["x"].shape == (1, 6, 4, 3)
    run(conv_image_model("NHWC"), {"x": ds.inputs["x"]})


def test_pad_keeps_the_aspect_ratio_and_pads_with_normalized_zeros(tmp_path: Path) -> None:
    # a 4 x 12 line into 8 x 32: twice the size (8 x 24) at the top left, then zeros (the normalized mean)
    px = np.full((4, 12, 3), 200, np.uint8)
    px[:, :6] = 20
    f = write_png(tmp_path / "line.png", px)
    pre = ImagePreprocess(resize="pad", mean=(0.5,), std=(0.5,), color="BGR")
    x = preprocess_image(f, pre, (8, 32))
    assert x.shape == (3, 8, 32)
    np.testing.assert_array_equal(x[:, :, 24:], 0.0)
    np.testing.assert_allclose(x[:, :, :10], (20 / 255 - 0.5) / 0.5, atol=1e-6)
    np.testing.assert_allclose(x[:, :, 14:24], (200 / 255 - 0.5) / 0.5, atol=1e-6)
    # taller than the box: fit the height, pad below and to the right
    tall = preprocess_image(write_png(tmp_path / "tall.png", np.full((16, 4, 3), 255, np.uint8)), pre, (8, 32))
    np.testing.assert_allclose(tall[:, :, :2], 1.0, atol=1e-6)
    np.testing.assert_array_equal(tall[:, :, 2:], 0.0)
    with pytest.raises(ValueError, match="resize: 'letterbox' is not one of stretch, center_crop, pad"):
        ImagePreprocess(resize="letterbox")


def test_layout_mismatch_names_the_fix(image_dir: tuple[Path, list[np.ndarray]]) -> None:
    folder, _ = image_dir
    with pytest.raises(InputError, match="pass --layout NCHW"):
        load_images(folder, specs(conv_image_model("NCHW")), ImagePreprocess(layout="NHWC"))
    with pytest.raises(InputError, match="pass --layout NHWC"):
        load_images(folder, specs(conv_image_model("NHWC")), ImagePreprocess(layout="NCHW"))
    with pytest.raises(InputError, match="--image-size 6x4"):
        load_images(folder, specs(conv_image_model()), ImagePreprocess(size=(8, 8)))


def test_unreadable_image_is_named(image_dir: tuple[Path, list[np.ndarray]]) -> None:
    folder, _ = image_dir
    (folder / "img_1.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(InputError, match=r"img_1\.png: not a readable image"):
        load_images(folder, specs(conv_image_model()), ImagePreprocess())


def test_image_preprocess_validation() -> None:
    with pytest.raises(ValueError, match="layout"):
        ImagePreprocess(layout="CHW")
    with pytest.raises(ValueError, match="mean: give 1 or 3 values"):
        ImagePreprocess(mean=(0.1, 0.2))
    with pytest.raises(ValueError, match="std: values must be positive"):
        ImagePreprocess(std=(0.0,))
    with pytest.raises(ValueError, match="size"):
        ImagePreprocess(size=(0, 4))


def test_image_folder_needs_declared_preprocessing(image_dir: tuple[Path, list[np.ndarray]]) -> None:
    folder, _ = image_dir
    with pytest.raises(InputError, match="needs a declared preprocessing"):
        load_calibration(folder, conv_image_model())
    ds = load_calibration(folder, conv_image_model(), images=ImagePreprocess(), max_samples=2)
    assert ds.num_samples == 2


def test_cli_quantize_static_from_images(image_dir: tuple[Path, list[np.ndarray]], tmp_path: Path) -> None:
    folder, _ = image_dir
    src = save_model(conv_image_model(), tmp_path / "conv.onnx")
    out = tmp_path / "q.onnx"
    base = ["quantize", str(src), "-o", str(out), "--mode", "static", "--no-latency-check"]
    ok = cli(*base, "--data", str(folder), "--image-size", "6x4", "--mean", "0.485,0.456,0.406", "--std",
             "0.229,0.224,0.225", "--no-check-speed")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(out)).graph.node}
    bad = cli(*base, "--data", str(folder), "--image-size", "6x4", "--layout", "NHWC", "--no-check-speed")
    assert bad.returncode == 2 and "pass --layout NCHW" in bad.stderr


def test_cli_quantize_says_what_it_did_with_the_data(tmp_path: Path) -> None:
    """Integer pixels cast to a float input, arrays the model does not read, a single sample: each is said (exit 0),
    and a single sample is not used to fit the bias correction, whose figure would then be measured on it."""
    src = save_model(conv_image_model(), tmp_path / "conv.onnx")
    pixels = rng(3).integers(0, 256, (4, 3, 6, 4)).astype(np.uint8)
    np.savez(tmp_path / "raw.npz", x=pixels, mask=np.ones(4))
    np.save(tmp_path / "one.npy", pixels[0].astype(np.float32) / 255)
    base = ["quantize", str(src), "--mode", "static", "--no-latency-check", "--no-check-speed"]
    raw = cli(*base, "-o", str(tmp_path / "a.onnx"), "--data", str(tmp_path / "raw.npz"))
    assert raw.returncode == 0, raw.stderr
    said = " ".join(raw.stdout.split())
    assert "calibration data: x: cast uint8 -> float32 (values taken as they are: if the model expects normalized" in said
    assert "calibration data: array(s) 'mask' match no model input (the model reads 'x'): not used" in said
    assert "empirical bias correction skipped" not in said
    one = cli(*base, "-o", str(tmp_path / "b.onnx"), "--data", str(tmp_path / "one.npy"))
    assert one.returncode == 0, one.stderr
    said = " ".join(one.stdout.split())
    assert "empirical bias correction skipped: one calibration sample" in said and "cast" not in said, said


# --------------------------------------------------------------------------- iterables


def test_iterable_of_single_samples_and_batches() -> None:
    model = seq_model()
    r = rng(2)
    feeds = [{"x": r.standard_normal((8, 16))} for _ in range(3)]  # single samples, float64 -> cast
    feeds.append({"x": r.standard_normal((4, 8, 16)).astype(np.float32)})  # a batch of 4
    ds = load_calibration(feeds, model)
    assert ds.num_samples == 7 and not ds.ragged
    assert ds.inputs["x"].dtype == np.float32 and ds.inputs["x"].shape == (7, 8, 16)
    np.testing.assert_allclose(ds.inputs["x"][1], feeds[1]["x"].astype(np.float32))


def test_iterable_consumed_only_up_to_max_samples() -> None:
    pulled = []

    def gen() -> Iterator[dict[str, np.ndarray]]:
        for i in range(1000):
            pulled.append(i)
            yield {"x": np.full((2, 4, 16), i, np.float32)}

    ds = load_calibration(gen(), seq_model(), max_samples=5)
    assert ds.num_samples == 5 and len(pulled) == 3
    assert ds.inputs["x"][:, 0, 0].tolist() == [0, 0, 1, 1, 2]


def test_iterable_errors() -> None:
    model = seq_model()
    with pytest.raises(InputError, match="empty"):
        load_calibration(iter([]), model)
    with pytest.raises(InputError, match="item 1: array .x. holds 1 NaN"):
        bad = np.zeros((4, 16), np.float32)
        bad[0, 0] = np.nan
        load_calibration([{"x": np.zeros((4, 16), np.float32)}, {"x": bad}], model)
    with pytest.raises(InputError, match="item 0 is a list, not a dict"):
        load_calibration([[np.zeros((4, 16))]], model)
    with pytest.raises(InputError, match="data is a int; give a path"):
        load_calibration(5, model)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="no array for model input"):
        load_calibration([{"y": np.zeros((4, 16))}], model)
    with pytest.raises(InputError, match="size 15 on axis 2"):
        load_calibration([{"x": np.zeros((1, 4, 15), np.float32)}], model)


# --------------------------------------------------------------------------- ragged shapes


def test_ragged_lengths_batch_per_shape_and_calibrate(tmp_path: Path) -> None:
    model = seq_model()
    r = rng(3)
    lengths = [8, 12, 8, 5, 12, 8]
    feeds = [{"x": r.standard_normal((1, s, 16)).astype(np.float32)} for s in lengths]
    ds = from_feeds(feeds, specs(model))
    assert ds.ragged and ds.num_samples == 6
    assert [g["x"].shape for g in ds.groups] == [(3, 8, 16), (2, 12, 16), (1, 5, 16)]
    batches = list(ds.batches(2))
    assert ds.num_batches(2) == len(batches) == 4
    assert all(len({b["x"].shape[1]}) == 1 for b, _ in batches)
    assert [(s.start, s.stop) for _, s in batches] == [(0, 2), (2, 3), (3, 5), (5, 6)]
    head = ds.head(4)
    assert head.num_samples == 4 and [g["x"].shape[0] for g in head.groups] == [3, 1]
    assert "3 shapes" in ds.notes[-1]
    # a folder of npz files of different lengths, calibrating a static int8 model end to end
    d = tmp_path / "calib"
    d.mkdir()
    for i, f in enumerate(feeds):
        np.savez(d / f"part{i:02d}.npz", x=f["x"])
    res = quantize(model, tmp_path / "q.onnx", config=StaticQuantConfig(latency_check=False), data=d)
    ref = run(model, {"x": feeds[1]["x"]})[0]
    got = run(tmp_path / "q.onnx", {"x": feeds[1]["x"]})[0]
    assert res.output_path is not None
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.99


# --------------------------------------------------------------------------- npz


def test_npz_nan_and_empty_rejected(tmp_path: Path) -> None:
    model = seq_model()
    x = np.zeros((3, 4, 16), np.float32)
    x[1, 2, 3] = np.inf
    np.savez(tmp_path / "inf.npz", x=x)
    with pytest.raises(InputError, match="1 NaN or infinite"):
        load_npz(tmp_path / "inf.npz", specs(model))
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 4, 16), np.float32))
    with pytest.raises(InputError, match="zero samples"):
        load_npz(tmp_path / "empty.npz", specs(model))
    (tmp_path / "none").mkdir()
    with pytest.raises(InputError, match="no .npz files"):
        load_calibration(tmp_path / "none", model)


def test_npz_folder_sample_limit_reads_no_more_files(tmp_path: Path) -> None:
    model = seq_model()
    for name in ("a", "b"):
        np.savez(tmp_path / f"{name}.npz", x=np.ones((5, 4, 16), np.float32))
    (tmp_path / "c.npz").write_bytes(b"not a zip")  # past the limit: never opened
    ds = load_npz_folder(tmp_path, specs(model), max_samples=7)
    assert ds.num_samples == 7 and not ds.ragged
    assert "using the first 7 samples" in ds.notes
    with pytest.raises(InputError, match=r"c\.npz: not a readable"):
        load_npz_folder(tmp_path, specs(model))


def test_dataset_passthrough_and_limit() -> None:
    ds = Dataset({"x": np.zeros((10, 4, 16), np.float32)})
    assert load_calibration(ds, seq_model()) is ds
    assert load_calibration(ds, seq_model(), max_samples=3).num_samples == 3
    assert load_calibration({"x": np.zeros((2, 4, 16), np.float32)}, seq_model()).num_samples == 2
