"""Keras models converted to ``.tflite`` by TensorFlow's converter, for the zoo (:mod:`zoo`).

Runs under a Python with TensorFlow (not tensorslim's environment: TensorFlow pins its own protobuf and numpy);
:mod:`zoo` calls it through a subprocess. Keras applications with ``weights=None`` and a seeded random init at a
small input size, and Keras LSTM and GRU models; every BatchNormalization gets the statistics of one forward pass
on generated images (momentum 0 in training mode, then random affine parameters), so that the random network
has activations of a trained one's scale rather than exploding or vanishing ones. Batch 1, float32.

    /path/to/tf/python benchmarks/zoo_keras.py OUT_DIR [--only REGEX] [--seed 0]

Writes ``OUT_DIR/<name>.tflite`` and ``OUT_DIR/<name>.json`` (the inputs: name, shape, dtype and value range,
for the zoo's generated feeds), skipping models whose both files exist.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # deterministic float results

SIZE = 96
VOCAB = 2000
STEPS = 24


def _apps() -> dict[str, Any]:
    import keras

    a = keras.applications
    shape = (SIZE, SIZE, 3)
    kw: dict[str, Any] = {"weights": None, "input_shape": shape, "classes": 100, "classifier_activation": None}
    return {
        "keras-mobilenet-v2": lambda: a.MobileNetV2(alpha=1.0, **kw),
        "keras-mobilenet-v3-small": lambda: a.MobileNetV3Small(include_preprocessing=False, **kw),
        "keras-efficientnet-b0": lambda: (
            a.EfficientNetB0(include_preprocessing=False, **kw)
            if "include_preprocessing" in a.EfficientNetB0.__code__.co_varnames
            else a.EfficientNetB0(**kw)
        ),
        "keras-resnet50": lambda: a.ResNet50(**kw),
        "keras-densenet121": lambda: a.DenseNet121(**kw),
    }


def _recurrent() -> dict[str, Any]:
    import keras
    from keras import layers

    def lstm() -> Any:  # token ids -> embedding -> 2 stacked LSTMs -> classifier
        ids = keras.Input((STEPS,), batch_size=1, dtype="int32", name="ids")
        x = layers.Embedding(VOCAB, 64)(ids)
        x = layers.LSTM(128, return_sequences=True)(x)
        x = layers.LSTM(128)(x)
        return keras.Model(ids, layers.Dense(20)(x), name="lstm_text")

    def gru() -> Any:  # frame features -> 2 stacked GRUs -> per-frame classes
        # 256 units: at 128 the graph's fixed structure (tensor names, loop plumbing: ~40 kB) is 6 % of the file
        x0 = keras.Input((STEPS, 40), batch_size=1, name="frames")
        x = layers.GRU(256, return_sequences=True)(x0)
        x = layers.GRU(256, return_sequences=True)(x)
        return keras.Model(x0, layers.Dense(12)(x), name="gru_audio")

    return {"keras-lstm-text": lstm, "keras-gru-audio": gru}


#: The models, in zoo order (what :mod:`zoo` lists without importing TensorFlow).
NAMES = (
    "keras-mobilenet-v2",
    "keras-mobilenet-v3-small",
    "keras-efficientnet-b0",
    "keras-resnet50",
    "keras-densenet121",
    "keras-lstm-text",
    "keras-gru-audio",
)


def models() -> dict[str, Any]:
    return {**_apps(), **_recurrent()}


def _inputs(name: str) -> list[dict[str, Any]]:
    if name == "keras-lstm-text":
        return [{"name": "ids", "shape": [1, STEPS], "dtype": "int32", "low": 0, "high": VOCAB}]
    if name == "keras-gru-audio":
        return [{"name": "frames", "shape": [1, STEPS, 40], "dtype": "float32", "low": -1.0, "high": 1.0}]
    return [{"name": "images", "shape": [1, SIZE, SIZE, 3], "dtype": "float32", "low": -1.0, "high": 1.0}]


def _feed(spec: dict[str, Any], n: int, rng: Any) -> Any:
    import numpy as np

    shape = [n, *spec["shape"][1:]]
    if spec["dtype"].startswith("int"):
        return rng.integers(spec["low"], spec["high"], size=shape).astype(spec["dtype"])
    return rng.uniform(spec["low"], spec["high"], size=shape).astype(np.float32)


def _settle_batchnorm(model: Any, specs: list[dict[str, Any]], rng: Any) -> None:
    """One forward pass in training mode with momentum 0 sets every moving mean/variance to its batch's;
    random gamma/beta then make the network a trained-looking one. A BatchNormalization feeding a residual Add
    gets a small gamma (0.1-0.3), as in trained residual networks: with unit-scale residual branches a random
    deep network is chaotic (MobileNetV2: per-channel int8 weights at 48 dB SQNR leave 0.99 output cosine,
    0.99998 with small residual branches), which measures the random init, not the quantizer."""
    import keras
    import numpy as np

    bns = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns:
        return
    for bn in bns:
        bn.momentum = 0.0
    model([_feed(s, 16, rng) for s in specs] if len(specs) > 1 else _feed(specs[0], 16, rng), training=True)
    for bn in bns:
        residual = any(type(n.operation).__name__ == "Add" for n in bn._outbound_nodes)
        if bn.gamma is not None:
            lo, hi = (0.1, 0.3) if residual else (0.5, 1.5)
            bn.gamma.assign(rng.uniform(lo, hi, size=bn.gamma.shape).astype(np.float32))
        if bn.beta is not None:
            bn.beta.assign(rng.normal(0.0, 0.1, size=bn.beta.shape).astype(np.float32))


def convert(name: str, build: Any, out_dir: Path, seed: int) -> Path:
    import keras
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = build()
    specs = _inputs(name)
    _settle_batchnorm(model, specs, rng)
    sig = [tf.TensorSpec(s["shape"], tf.as_dtype(s["dtype"]), name=s["name"]) for s in specs]
    fn = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False), input_signature=sig)
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(fn.get_concrete_function())  # weights as constants, not variables
    conv = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    payload = conv.convert()
    path = out_dir / f"{name}.tflite"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)
    (out_dir / f"{name}.json").write_text(json.dumps({"inputs": specs, "seed": seed, "tf": tf.__version__}))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--only", default="")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--list", action="store_true", help="print the model names and exit")
    args = ap.parse_args(argv)
    names = [n for n in models() if re.search(args.only, n)]
    if args.list:
        print("\n".join(names))
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (args.out_dir / f"{name}.tflite").exists() and (args.out_dir / f"{name}.json").exists():
            continue
        path = convert(name, models()[name], args.out_dir, args.seed)
        print(f"{name}: {path.stat().st_size / 1e6:.1f} MB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
