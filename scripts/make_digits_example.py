"""Build the bundled example model of tensorslim: a CNN trained on scikit-learn's digits data set.

The script is reproducible: fixed seeds, deterministic PyTorch algorithms and a single CPU thread. It

1. loads ``sklearn.datasets.load_digits`` (1797 8x8 images, bundled, no network), scales pixels to [0, 1],
   upsamples them bilinearly to 32x32 and normalizes them with a fixed mean/std;
2. splits the images into four disjoint sets (stratified, fixed seeds): test (20 %), calibration
   (CALIB_SAMPLES), selection (VAL_SAMPLES) and training (the rest); the model never sees the calibration,
   selection or test images while it trains;
3. trains a ~1.9 M-parameter CNN (Conv3x3+BatchNorm+ReLU blocks with 32/64/128/256/384 channels, a residual
   block, a depthwise-separable block, max pooling, global average pooling, a Linear-ReLU-Dropout-Linear head)
   on CPU with random-shift augmentation;
4. exports it to ONNX (opset 17, input ``input``, output ``logits``, dynamic batch axis), runs the ONNX
   checker and checks that ONNX Runtime matches PyTorch within 1e-4;
5. writes ``digits_cnn.onnx``, ``digits_test.npz``, ``digits_calib.npz``, ``digits_val.npz`` and ``README.md`` into
   ``src/tensorslim/examples/``.

Run it from the repository root (needs ``pip install torch==2.13.0``)::

    .venv/bin/python scripts/make_digits_example.py
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import time
import warnings
import zipfile
from pathlib import Path

# Single-threaded, deterministic math; must be set before torch/numpy spin up their thread pools.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

SEED = 20240611
IMAGE_SIZE = 32
# Fixed normalization constants (pixel mean/std of the upsampled [0, 1] digits, rounded).
MEAN = 0.305
STD = 0.325
TEST_FRACTION = 0.2
CALIB_SAMPLES = 200  # calibration split: not trained on
VAL_SAMPLES = 300  # selection split of `tensorslim optimize`: not trained on, disjoint from calibration
MAX_SHIFT = 3  # random shift of up to +-3 pixels (at 32x32) in each direction
EPOCHS = 12
BATCH_SIZE = 64
LR = 3e-3
WEIGHT_DECAY = 5e-4
OPSET = 17
MIN_TEST_ACCURACY = 0.97

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "src" / "tensorslim" / "examples"


def set_determinism(seed: int) -> None:
    """Seed every RNG and force deterministic, single-threaded PyTorch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def load_data(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The four disjoint splits ``{"train", "calib", "val", "test"}: (x, y)``; x is float32 N x 1 x 32 x 32
    normalized, y int64.

    Test is a stratified 20 % split; calibration and selection are stratified draws of CALIB_SAMPLES and
    VAL_SAMPLES images from the rest (seeds ``seed + 1`` and ``seed + 2``); training is what is left.
    """
    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)  # N x 1 x 8 x 8 in [0, 1]
    up = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    x = ((up - MEAN) / STD).numpy().astype(np.float32)
    y = digits.target.astype(np.int64)
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=TEST_FRACTION, stratify=y, random_state=seed)
    rest, calib = train_test_split(rest, test_size=CALIB_SAMPLES, stratify=y[rest], random_state=seed + 1)
    train, val = train_test_split(rest, test_size=VAL_SAMPLES, stratify=y[rest], random_state=seed + 2)
    return {k: (np.ascontiguousarray(x[np.sort(v)]), np.ascontiguousarray(y[np.sort(v)]))
            for k, v in (("train", train), ("calib", calib), ("val", val), ("test", test))}  # fmt: skip


def conv_bn_relu(c_in: int, c_out: int, groups: int = 1, kernel: int = 3) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + ReLU, 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 Conv+BN layers with an identity shortcut (a Conv/Add/Relu pattern after export)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(channels, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.bn2(self.conv2(self.conv1(x))))


class DigitsCNN(nn.Module):
    """Small VGG/ResNet-style CNN for 1 x 32 x 32 inputs, 10 classes."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(1, 32),  # 32x32
            nn.MaxPool2d(2),  # 16x16
            conv_bn_relu(32, 64),
            ResidualBlock(64),
            conv_bn_relu(64, 128),
            nn.MaxPool2d(2),  # 8x8
            conv_bn_relu(128, 128, groups=128),  # depthwise 3x3
            conv_bn_relu(128, 256, kernel=1),  # pointwise 1x1
            conv_bn_relu(256, 256),
            nn.MaxPool2d(2),  # 4x4
            conv_bn_relu(256, 384),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(384, 512),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def random_shift(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to MAX_SHIFT pixels in x and y, filling with the background value."""
    background = (0.0 - MEAN) / STD
    padded = F.pad(batch, (MAX_SHIFT,) * 4, value=background)
    offsets = torch.randint(0, 2 * MAX_SHIFT + 1, (batch.shape[0], 2), generator=gen).tolist()
    return torch.stack([padded[i, :, dy : dy + IMAGE_SIZE, dx : dx + IMAGE_SIZE] for i, (dy, dx) in enumerate(offsets)])


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Return float32 logits of ``model`` (eval mode) on ``x``."""
    model.eval()
    outs = [model(torch.from_numpy(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    return torch.cat(outs).numpy()


def train(model: nn.Module, x_train: np.ndarray, y_train: np.ndarray, seed: int) -> None:
    """Train ``model`` in place with AdamW + one-cycle LR, label smoothing and random shifts."""
    gen = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(x_train)
    yt = torch.from_numpy(y_train)
    steps_per_epoch = (len(xt) + BATCH_SIZE - 1) // BATCH_SIZE
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=EPOCHS * steps_per_epoch, pct_start=0.25)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    for epoch in range(EPOCHS):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(len(xt), generator=gen)
        total_loss = 0.0
        correct = 0
        for i in range(0, len(xt), BATCH_SIZE):
            idx = perm[i : i + BATCH_SIZE]
            xb = random_shift(xt[idx], gen)
            yb = yt[idx]
            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        print(
            f"epoch {epoch + 1:2d}/{EPOCHS}  loss {total_loss / len(xt):.4f}  "
            f"train acc (augmented) {correct / len(xt):.4f}  {time.perf_counter() - t0:.1f}s",
            flush=True,
        )


def export_onnx(model: nn.Module, path: Path) -> None:
    """Export ``model`` (eval mode) to ONNX opset 17 with a dynamic batch axis, then check it."""
    model.eval()
    dummy = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.float32)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter (dynamo=False) warns that it is legacy; it is deterministic and needs no
        # onnxscript, and folds BatchNorm into the convolutions in eval mode.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            buf,
            dynamo=False,
            export_params=True,
            opset_version=OPSET,
            do_constant_folding=True,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    proto = onnx.load_from_string(buf.getvalue())
    proto.doc_string = "tensorslim example: digits CNN (scripts/make_digits_example.py)"
    onnx.checker.check_model(proto, full_check=True)
    path.write_bytes(proto.SerializeToString())


def save_npz_deterministic(path: Path, **arrays: np.ndarray) -> None:
    """Like ``np.savez_compressed`` but with fixed zip timestamps, so the bytes are reproducible."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            data = io.BytesIO()
            np.lib.format.write_array(data, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data.getvalue())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_readme(path: Path, n_params: int, sizes: dict[str, int], acc: float, onnx_bytes: int) -> None:
    n_train, n_test = sizes["train"], sizes["test"]
    text = f"""# Bundled example: digits CNN

`digits_cnn.onnx` is the model that `tensorslim optimize` (with no arguments) works on. It is a small
VGG/ResNet-style CNN trained on scikit-learn's bundled *digits* data set (1797 8x8 grey-scale digits),
upsampled bilinearly to 32x32.

- Input `input`: float32 `[batch, 1, 32, 32]`, pixels scaled to [0, 1] and normalized as
  `(x - {MEAN}) / {STD}`; the batch axis is dynamic.
- Output `logits`: float32 `[batch, 10]` (class scores for digits 0-9; no softmax).
- Architecture: Conv3x3+BatchNorm+ReLU blocks with 32/64/128/256/384 channels, one residual block (Add),
  one depthwise-separable block (depthwise 3x3 + pointwise 1x1), 3 MaxPools, global average pool,
  Linear(384, 512)-ReLU-Dropout-Linear(512, 10). BatchNorm is folded into the convolutions by the exporter.
- Parameters: {n_params:,} (float32, {onnx_bytes / 1e6:.2f} MB ONNX file, opset {OPSET}).
- Float test accuracy: **{acc * 100:.2f}%** on the {n_test} held-out images of `digits_test.npz`
  (stratified {int(TEST_FRACTION * 100)}% split, seed {SEED}; trained on {n_train} images).

Data files (NumPy `.npz` with arrays `input`, float32 `N x 1 x 32 x 32` normalized as above, and `label`,
int64 `N`):

- `digits_test.npz`: the held-out test split ({n_test} images).
- `digits_calib.npz`: {sizes["calib"]} images for calibration (e.g. static quantization).
- `digits_val.npz`: {sizes["val"]} images, the selection split of `tensorslim optimize`'s search.

The four sets (training, calibration, selection, test) are disjoint (stratified, seeded draws of distinct
images): the model was not trained on any image of the three files, so an accuracy on any of them is a
held-out figure; `tests/test_examples.py` pins the sizes and checks that no image appears in two files.

## Regenerate

From the repository root, with the CPU build of PyTorch installed (`.venv/bin/pip install torch==2.13.0`):

```
.venv/bin/python scripts/make_digits_example.py
```

Training is seeded, single-threaded and uses deterministic algorithms; it takes a few minutes on a CPU.
"""
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="output folder")
    args = parser.parse_args()
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    t_start = time.perf_counter()
    set_determinism(SEED)
    splits = load_data(SEED)
    x_train, y_train = splits["train"]
    x_test, y_test = splits["test"]
    print("  ".join(f"{k} {v[0].shape[0]}" for k, v in splits.items()))

    model = DigitsCNN()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params:,}")
    train(model, x_train, y_train, SEED)

    model.eval()
    torch_logits = predict(model, x_test)
    acc = float((torch_logits.argmax(1) == y_test).mean())
    print(f"torch test accuracy: {acc:.4f}")
    if acc < MIN_TEST_ACCURACY:
        raise SystemExit(f"test accuracy {acc:.4f} is below {MIN_TEST_ACCURACY}")

    onnx_path = out_dir / "digits_cnn.onnx"
    export_onnx(model, onnx_path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    ort_logits = np.concatenate(
        [sess.run(["logits"], {"input": x_test[i : i + 64]})[0] for i in range(0, len(x_test), 64)]
    )
    max_diff = float(np.abs(ort_logits - torch_logits).max())
    ort_acc = float((ort_logits.argmax(1) == y_test).mean())
    print(f"onnxruntime test accuracy: {ort_acc:.4f}  max |ort - torch| = {max_diff:.2e}")
    if max_diff > 1e-4:
        raise SystemExit(f"ONNX Runtime output differs from torch by {max_diff:.2e} > 1e-4")
    if ort_acc != acc:
        raise SystemExit("ONNX Runtime accuracy differs from torch")

    for split, name in (("test", "digits_test.npz"), ("calib", "digits_calib.npz"), ("val", "digits_val.npz")):
        x, y = splits[split]
        save_npz_deterministic(out_dir / name, input=x, label=y)
    onnx_bytes = onnx_path.stat().st_size
    write_readme(out_dir / "README.md", n_params, {k: len(v[1]) for k, v in splits.items()}, acc, onnx_bytes)

    print(f"ONNX file: {onnx_path} ({onnx_bytes / 1e6:.2f} MB)")
    for name in ("digits_cnn.onnx", "digits_test.npz", "digits_calib.npz", "digits_val.npz", "README.md"):
        print(f"  sha256 {sha256(out_dir / name)}  {name}")
    print(f"done in {time.perf_counter() - t_start:.0f}s")


if __name__ == "__main__":
    main()
