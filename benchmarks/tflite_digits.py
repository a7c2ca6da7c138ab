"""TFLite: tensorslim against TensorFlow's own converter on a small Keras CNN trained on scikit-learn's digits.

Trains the CNN (8x8 digits, held-out test split), converts it with ``tf.lite.TFLiteConverter`` to float,
dynamic-range (``Optimize.DEFAULT``), float16 (``supported_types=[tf.float16]``) and full-integer
(``representative_dataset``) ``.tflite`` files, then quantizes the float ``.tflite`` with tensorslim in the
same modes (the same calibration samples for the full-integer mode). Prints, side by side, file size, test
accuracy and LiteRT latency (batch 1, one thread, interleaved timing) and checks the targets: tensorslim's
files no larger than the converter's (within 1 %) and at least as accurate (within 0.2 points).

TensorFlow is a benchmark-only dependency: ``pip install -e '.[tflite-bench]'``.

    python benchmarks/tflite_digits.py [--epochs 30] [--seconds 3] [--out benchmarks/.cache/tflite_digits]

Exit status 0 when every target holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _data(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    return train_test_split(x, d.target.astype(np.int64), test_size=0.3, random_state=seed, stratify=d.target)


def _train(x: np.ndarray, y: np.ndarray, epochs: int, seed: int):
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((8, 8, 1), name="image")
    h = tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inp)
    h = tf.keras.layers.Conv2D(64, 3, padding="same", activation="relu")(h)
    h = tf.keras.layers.MaxPooling2D()(h)
    h = tf.keras.layers.Conv2D(64, 3, padding="same", activation="relu")(h)
    h = tf.keras.layers.Flatten()(h)
    h = tf.keras.layers.Dense(128, activation="relu")(h)
    out = tf.keras.layers.Dense(10, activation="softmax")(h)
    model = tf.keras.Model(inp, out)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def _convert(model, mode: str, calib: np.ndarray) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode != "float":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "fp16":
        conv.target_spec.supported_types = [tf.float16]
    if mode == "static":

        def rep():
            for i in range(calib.shape[0]):
                yield [calib[i : i + 1]]

        conv.representative_dataset = rep
    return conv.convert()


def _accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    from tensorslim.runtime.litert import LiteRTRuntime

    rt = LiteRTRuntime(path, threads=1)
    probs = rt.run({rt.inputs[0].name: x})[0]
    return float(np.mean(np.argmax(probs, axis=1) == y))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=3.0, help="timing budget per model")
    ap.add_argument("--calib", type=int, default=200, help="calibration samples (training split)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / ".cache" / "tflite_digits")
    args = ap.parse_args(argv)

    from tensorslim.backends.tflite.quantize import quantize_tflite
    from tensorslim.benchmark.litert import benchmark_litert

    args.out.mkdir(parents=True, exist_ok=True)
    x_tr, x_te, y_tr, y_te = _data(args.seed)
    calib = x_tr[: args.calib]
    model = _train(x_tr, y_tr, args.epochs, args.seed)
    paths: dict[str, Path] = {}
    for mode in ("float", "dynamic", "fp16", "static"):
        p = args.out / f"converter_{mode}.tflite"
        p.write_bytes(_convert(model, mode, calib))
        paths[f"converter {mode}"] = p
    input_name = "image"
    np.savez(args.out / "calib.npz", **{input_name: calib})
    np.savez(args.out / "test.npz", **{input_name: x_te, "label": y_te})
    for mode in ("dynamic", "fp16", "static"):
        p = args.out / f"tensorslim_{mode}.tflite"
        res = quantize_tflite(paths["converter float"], p, mode=mode, data=args.out / "calib.npz")
        for note in res.notes:
            print(f"tensorslim {mode}: {note}")
        paths[f"tensorslim {mode}"] = p
    acc = {k: _accuracy(p, x_te, y_te) for k, p in paths.items()}
    rep = benchmark_litert(list(paths.values()), threads=1, batch_size=1, max_time_s=args.seconds)
    lat = {k: m for k, m in zip(paths, rep.models, strict=True)}

    print(f"\nKeras CNN on scikit-learn digits: {len(y_te)} test samples, {rep.env.execution_provider}, "
          f"1 thread, batch 1, {rep.env.cpu_model}")  # fmt: skip
    print(f"{'model':22s} {'file bytes':>11s} {'size vs conv':>12s} {'accuracy %':>10s} {'p50 ms':>8s} {'95% CI':>17s}")
    ok = True
    for key, p in paths.items():
        mode = key.split()[1]
        size = p.stat().st_size
        ref = paths.get(f"converter {mode}")
        ratio = size / ref.stat().st_size if ref else 1.0
        m = lat[key]
        print(f"{key:22s} {size:11,d} {ratio:12.4f} {100 * acc[key]:10.2f} {m.p50_ms:8.4f} "
              f"[{m.p50_ci_low_ms:.4f}, {m.p50_ci_high_ms:.4f}]")  # fmt: skip
        if key.startswith("tensorslim"):
            size_ok = ratio <= 1.01
            acc_ok = 100 * acc[key] >= 100 * acc[f"converter {mode}"] - 0.2
            ok = ok and size_ok and acc_ok
            if not (size_ok and acc_ok):
                print(f"  target missed for {mode}: size ratio {ratio:.4f} (<= 1.01), accuracy "
                      f"{100 * acc[key]:.2f} vs converter {100 * acc[f'converter {mode}']:.2f} (-0.2 allowed)")  # fmt: skip
    print("\nall targets met" if ok else "\nsome targets missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
