"""A zoo of architectures through every mode: does the output load, run, shrink and keep its outputs?

Every architecture of :mod:`zoo_models` (transformers from tiny random configs, CNN families and recurrent
models in plain torch) is exported once per variant (opset x fixed/dynamic batch) and cached under
``benchmarks/.cache/zoo/``; each variant then goes through every mode via the Python API:

* ``dynamic`` (the default), ``weight_only``, ``static`` (calibrated on generated samples: each row first checks
  that the four data forms of :data:`DATA_FORMS` load to the same samples, then quantizes with the one
  :func:`data_form` picks for the variant, named in the cell), ``int4`` (with the same data: GPTQ), ``fp16``, ``prune``, ``cluster``, ``pack`` (pack,
  then unpack and run the unpacked model);

and is checked: the output loads and runs in ONNX Runtime, is smaller than the input (not for prune and
cluster, which keep the tensors' shapes), and keeps the output cosine on generated inputs (>= 0.99 dynamic,
weight-only, fp16, int4; >= 0.98 static; bit-exact for pack/unpack; reported only for prune and cluster).
A run that raises anything but :class:`~tensorslim.errors.InputError` is an internal error (what the CLI
would exit 3 on), and fails.

The Keras models of :mod:`zoo_keras` (Keras applications and LSTM/GRU models, converted to ``.tflite`` by
TensorFlow's converter under a separate TensorFlow python: ``$TENSORSLIM_TF_PYTHON``, or the venv that
``--make-tf-venv`` creates under ``benchmarks/.cache/tfvenv``) go through every TFLite mode (dynamic, integer,
weight_only, static, fp16, prune, cluster, pack) and are checked in LiteRT (weight_only: cosine >= 0.999 at
<= 0.30x; pack: unpacks to the exact .tflite bytes and is smaller than zstd -19 of the .tflite). Without a
TensorFlow python, Keras models not already in the cache are skipped with the reason printed.

The pseudo-mode ``speed`` (both formats) times the default mode's output against the float model, interleaved;
``static_speed`` (ONNX) times the static mode's output the same way (the static default must not be slower than
float on the machine that quantized it, unless it said so).

    python benchmarks/zoo.py                        # everything, writes benchmarks/ZOO.md
    python benchmarks/zoo.py --quick --make-tf-venv # 5 ONNX + 2 Keras models, one variant each (CI)
    python benchmarks/zoo.py --only 'bert|lstm' --modes dynamic,static
    python benchmarks/zoo.py --only '^keras-' --update   # rerun some rows, keep the other cells of ZOO.md
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo_keras as zk
import zoo_models as zm

CACHE = Path(__file__).resolve().parent / ".cache" / "zoo"
MODES = ("dynamic", "weight_only", "static", "int4", "fp16", "prune", "cluster", "pack")
THRESHOLDS = {"dynamic": 0.99, "weight_only": 0.99, "fp16": 0.99, "int4": 0.99, "static": 0.98, "pack": 0.999999}
QUICK = ("bert", "vit", "resnet", "mobilenet-v3", "lstm-text", "keras-mobilenet-v2", "keras-lstm-text")
#: The models of the quick run get one variant each (opset 17, dynamic batch); the Keras ones need a TF python.
TFLITE_MODES = ("dynamic", "integer", "weight_only", "static", "int4", "fp16", "prune", "cluster", "pack")
#: The .tflite modes tensorslim has: dynamic (the default, ``auto`` form: hybrid kernels where LiteRT's are fast,
#: weight-only elsewhere), integer (hybrid kernels wherever LiteRT has one, the converter's choice), weight_only
#: (int8 weights behind DEQUANTIZE, float compute), static (full integer, calibrated), fp16; prune and cluster
#: (magnitude 50 % and k-means 16 in place: float tensors, cosine reported only, as for ONNX), pack (the .tslim
#: unpacks to the very bytes of the .tflite, and is smaller than zstd -19 of it).
TFLITE_THRESHOLDS = {"dynamic": 0.99, "integer": 0.99, "weight_only": 0.999, "fp16": 0.99, "static": 0.98,
                     "int4": 0.99, "pack": 0.999999}  # fmt: skip
WEIGHT_ONLY_MAX_RATIO = 0.30  # TFLite weight-only: >= 0.999 cosine at <= 0.30x size
SPEED = "speed"
#: The pseudo-mode ``speed``: the default mode's output timed against the float model, interleaved in one process
#: (ONNX Runtime or LiteRT, one thread, batch 1 or the fixed batch); the cell is the latency ratio (quantized / float,
#: the median over interleaved rounds of each round's ratio) with its 95 % interval
#: (:func:`tensorslim.benchmark.latency.timed_ratio`). Pass: the
#: interval's low end is at most :data:`SPEED_TOLERANCE` (not slower by more than noise).
SPEED_TOLERANCE = 1.03
STATIC_SPEED = "static_speed"
#: The pseudo-mode ``static_speed``: the static mode's output (``StaticQuantConfig()``, the calibration of the
#: ``static`` cell) timed like ``speed``, on the threads static quantization's own latency check used. Pass: not
#: slower than float by more than noise, or the quantization said it is slower (its notes, which name what it
#: moved back to float).
STATIC_SPEED_THREADS = 1
#: The static cells quantize with ``$TENSORSLIM_THREADS`` set to this (the threads of the latency check) unless it
#: is set already: the zoo's models run in a fraction of a millisecond, and two threads on a two-core machine time
#: them with +-20 % intervals where one thread gives +-1 %.
TF_PYTHON_ENV = "TENSORSLIM_TF_PYTHON"
TF_VENV = CACHE.parent / "tfvenv"
TF_REQUIREMENT = "tensorflow-cpu==2.21.0"  # the version the Keras rows of ZOO.md were converted with


@dataclass
class Variant:
    arch: zm.Arch
    opset: int
    dynamic: bool

    @property
    def name(self) -> str:
        return f"{self.arch.name}-op{self.opset}-{'dyn' if self.dynamic else 'b1'}"

    @property
    def path(self) -> Path:
        return CACHE / f"{self.name}.onnx"

    def feeds(self, batch: int, seed: int) -> dict[str, np.ndarray]:
        return self.arch.inputs(batch, np.random.default_rng(seed))


@dataclass
class Row:
    variant: str
    mode: str
    ok: bool
    ratio: float | None = None
    cosine: float | None = None
    error: str = ""
    seconds: float = 0.0
    interval: tuple[float, float] | None = None  # speed rows: the latency ratio's 95 % interval
    form: str = ""  # static rows: the calibration data form quantized with (:data:`DATA_FORMS`)


def variants(arch: zm.Arch) -> list[Variant]:
    """The first opset with a dynamic batch (where the model has one), the others with a fixed batch of 1."""
    return [Variant(arch, op, i == 0) for i, op in enumerate(arch.opsets)]


def export(v: Variant) -> Path:
    """Export (once: cached) the variant's ONNX file."""
    if v.path.exists():
        return v.path
    import torch

    v.path.parent.mkdir(parents=True, exist_ok=True)
    module = v.arch.build()
    feeds = v.feeds(1, 0)
    args = tuple(torch.from_numpy(a) for a in feeds.values())
    names = list(feeds)
    axes = dict(v.arch.batch_axes)
    dynamic = {n: {axes.get(n, 0): "batch"} for n in names if axes.get(n, 0) >= 0} if v.dynamic else None
    if dynamic is not None:
        dynamic.update({o: {0: "batch"} for o in v.arch.outputs if o not in ("hn", "cn", "stateN")})
        dynamic.update({o: {1: "batch"} for o in v.arch.outputs if o in ("hn", "cn", "stateN")})
    if v.arch.script:
        module = torch.jit.script(module)
    tmp = v.path.with_suffix(".tmp.onnx")
    with contextlib.redirect_stderr(io.StringIO()), _quiet():
        torch.onnx.export(
            module, args, str(tmp), input_names=names, output_names=list(v.arch.outputs), opset_version=v.opset,
            dynamic_axes=dynamic, dynamo=False, do_constant_folding=True,
        )  # fmt: skip
    for extra in tmp.parent.glob(tmp.name + "*.data"):  # pragma: no cover - tiny models have no external data
        extra.unlink()
    os.replace(tmp, v.path)
    return v.path


@contextlib.contextmanager
def _quiet() -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _run(path: Path | Any, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    src = str(path) if isinstance(path, Path) else path.SerializeToString()
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return [sess.run(None, {k: v for k, v in f.items() if k in names}) for f in feeds]


def _cosine(ref: list[list[np.ndarray]], cand: list[list[np.ndarray]]) -> float:
    worst = 1.0
    for rs, cs in zip(ref, cand, strict=True):
        for r, c in zip(rs, cs, strict=True):
            a, b = r.astype(np.float64).ravel(), c.astype(np.float64).ravel()
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            cos = 1.0 if na == 0 and nb == 0 else float(a @ b / (na * nb)) if na and nb else 0.0
            worst = min(worst, cos)
    return worst


def _eval_feeds(v: Variant) -> list[dict[str, np.ndarray]]:
    return [v.feeds(2 if v.dynamic else 1, 100 + i) for i in range(3)]


def _calibration(v: Variant, n: int = 32) -> list[dict[str, np.ndarray]]:
    """Per-sample feeds (the form ONNX Runtime's calibration readers produce)."""
    return [v.feeds(1, 1000 + i) for i in range(n)]


#: The calibration data forms of the data contract (:mod:`tensorslim.data`), each written from the same per-sample
#: feeds: ``feeds`` a list of feed dicts (e), ``stacked`` one ``.npz`` of ``np.stack`` of the feeds
#: (``[N, *input_shape]``, ``[N]`` for a scalar input) (b), ``batch-axis`` one ``.npz`` with the samples
#: concatenated along each input's own batch axis (a), ``npz-folder`` a folder of ``.npz``, one feed each (d).
DATA_FORMS = ("feeds", "stacked", "batch-axis", "npz-folder")


def data_form(name: str) -> str:
    """The form a variant's static row quantizes with: a fixed function of its name, so reruns agree."""
    import zlib

    return DATA_FORMS[zlib.crc32(name.encode()) % len(DATA_FORMS)]


def _static_data(v: Variant, tmp: Path) -> tuple[Any, str]:
    """The ONNX variant's calibration data in its :func:`data_form` (see :func:`_data_forms`)."""
    from tensorslim.runtime.ort import OrtRuntime

    return _data_forms(v.name, _calibration(v), dict(v.arch.batch_axes), OrtRuntime(v.path).inputs, tmp)


def _data_forms(name: str, feeds: list[dict[str, np.ndarray]], axes: dict[str, int], specs: Any,
                tmp: Path) -> tuple[Any, str]:  # fmt: skip
    """``feeds`` in the :func:`data_form` of ``name``, after checking that every form of :data:`DATA_FORMS` loads
    to the very same samples as the list of feeds (an :class:`~tensorslim.errors.InputError` names the form that
    does not). ``axes``: each input's batch axis (0 unless listed; -1: none, e.g. a scalar input)."""
    from tensorslim.data import load_data
    from tensorslim.errors import InputError

    forms: dict[str, Any] = {"feeds": feeds}
    tmp.mkdir(parents=True, exist_ok=True)
    stacked, batched = tmp / "stacked.npz", tmp / "batch_axis.npz"
    np.savez(stacked, **{k: np.stack([f[k] for f in feeds]) for k in feeds[0]})
    np.savez(batched, **{k: np.concatenate([f[k] for f in feeds], axis=axes.get(k, 0)) if axes.get(k, 0) >= 0
                         else np.stack([f[k] for f in feeds]) for k in feeds[0]})  # fmt: skip
    folder = tmp / "npz_folder"
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(feeds):
        np.savez(folder / f"sample_{i:03d}.npz", **f)
    forms.update({"stacked": stacked, "batch-axis": batched, "npz-folder": folder})
    ref = load_data(feeds, specs).groups
    for form, data in forms.items():
        try:
            got = load_data(data, specs).groups
        except InputError as e:
            raise InputError(f"data form {form}: {e}") from None
        same = len(got) == len(ref) and all(g.keys() == r.keys() and all(np.array_equal(g[k], r[k]) for k in r)
                                            for g, r in zip(got, ref, strict=True))  # fmt: skip
        if not same:
            raise InputError(f"data form {form} loads to other samples than the list of feeds")
    form = data_form(name)
    return forms[form], form


def run_mode(v: Variant, mode: str, out_dir: Path) -> Row:
    import tensorslim as ts
    from tensorslim.errors import InputError
    from tensorslim.passes.blockwise_quant import BlockQuantConfig
    from tensorslim.passes.dynamic_quant import DynamicQuantConfig
    from tensorslim.passes.float16 import Float16Config
    from tensorslim.passes.static_quant import StaticQuantConfig

    src = v.path
    out = out_dir / f"{v.name}.{mode}.onnx"
    start = time.perf_counter()
    form = ""
    try:
        with _quiet():
            if mode in ("dynamic", SPEED):
                ts.quantize(src, out)
            elif mode == "weight_only":
                ts.quantize(src, out, config=DynamicQuantConfig(form="weight_only"))
            elif mode == "static" or (mode == STATIC_SPEED and not _static_out(out_dir, v.name).exists()):
                data, form = _static_data(v, out_dir / f"{v.name}.data")
                with _check_threads(STATIC_SPEED_THREADS):
                    res = ts.quantize(src, _static_out(out_dir, v.name), config=StaticQuantConfig(), data=data)
                _static_out(out_dir, v.name).with_suffix(".notes").write_text("\n".join(res.notes))
            elif mode == "int4":
                ts.quantize(src, out, config=BlockQuantConfig(bits=4), data=_calibration(v))
            elif mode == "fp16":
                ts.quantize(src, out, config=Float16Config())
            elif mode == "prune":
                ts.prune(src, out)
            elif mode == "cluster":
                ts.cluster(src, out)
            else:
                packed = out.with_suffix(".tslim")
                ts.pack(src, packed)
                ts.unpack(packed, out)
        if mode == SPEED:
            return _speed_row(v.name, src, out, v.feeds(1, 7), False, start)
        if mode == STATIC_SPEED:
            return _static_speed_row(v.name, src, _static_out(out_dir, v.name), v.feeds(1, 7), start)
        feeds = _eval_feeds(v)
        cos = _cosine(_run(src, feeds), _run(out, feeds))
    except InputError as e:
        return Row(v.name, mode, False, error=f"exit 2: {e}", seconds=time.perf_counter() - start)
    except Exception as e:  # what the CLI reports as an internal error (exit 3)
        tb = traceback.extract_tb(e.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb) if "tensorslim" in f.filename), "")
        msg = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        return Row(v.name, mode, False, error=f"exit 3: {msg} ({where})", seconds=time.perf_counter() - start)
    size = (out.with_suffix(".tslim") if mode == "pack" else out).stat().st_size
    ratio = size / src.stat().st_size
    ok = True
    why = []
    if mode not in ("prune", "cluster") and ratio >= 1.0:
        ok, why = False, [f"not smaller ({ratio:.3f}x)"]
    if mode in THRESHOLDS and not cos >= THRESHOLDS[mode]:
        ok = False
        why.append(f"cosine {cos:.5f} < {THRESHOLDS[mode]}")
    return Row(v.name, mode, ok, ratio, cos, "; ".join(why), time.perf_counter() - start, form=form)


def _static_out(out_dir: Path, name: str) -> Path:
    """Where the ``static`` cell writes its model (and ``.notes``), which ``static_speed`` times."""
    return out_dir / f"{name}.static.onnx"


@contextlib.contextmanager
def _check_threads(threads: int) -> Any:
    """``$TENSORSLIM_THREADS`` (the threads of static quantization's latency check) set to ``threads`` unless the
    caller set it."""
    from tensorslim.runtime.ort import THREADS_ENV

    if os.environ.get(THREADS_ENV):
        yield
        return
    os.environ[THREADS_ENV] = str(threads)
    try:
        yield
    finally:
        del os.environ[THREADS_ENV]


def static_threads() -> int:
    """The intra-op threads of static quantization's latency check in the zoo (``tensorslim.passes.static_latency``)."""
    from tensorslim.passes.static_latency import check_threads

    with _check_threads(STATIC_SPEED_THREADS):
        return check_threads()


def _speed(
    src: Path, out: Path, feeds: dict[str, np.ndarray], tflite: bool, threads: int = 1
) -> tuple[float, tuple[float, float]]:
    """The latency ratio out / src (the median over interleaved rounds of each round's ratio) and its 95 % interval,
    timed on ``threads`` threads."""
    from tensorslim.benchmark.latency import timed_ratio

    if tflite:
        from tensorslim.runtime.litert import LiteRTRuntime

        rts = [LiteRTRuntime(p.read_bytes(), threads=1) for p in (src, out)]
        fns = [lambda rt=rt: rt.run(feeds) for rt in rts]
    else:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = threads
        sessions = [ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]) for p in (src, out)]
        fns = []
        for sess in sessions:
            names = {i.name for i in sess.get_inputs()}
            f = {k: v for k, v in feeds.items() if k in names}
            fns.append(lambda sess=sess, f=f: sess.run(None, f))
    ratio, lo, hi = timed_ratio(fns[0], fns[1], seconds=3.0, min_runs=30)  # warms both up itself
    return ratio, (lo, hi)


def _speed_row(name: str, src: Path, out: Path, feeds: dict[str, np.ndarray], tflite: bool, start: float) -> Row:
    ratio, (lo, hi) = _speed(src, out, feeds, tflite)
    ok = lo <= SPEED_TOLERANCE
    why = "" if ok else f"slower than float: {ratio:.2f}x [{lo:.2f}-{hi:.2f}]"
    return Row(name, SPEED, ok, ratio, None, _with_load(why), time.perf_counter() - start, (lo, hi))


def _with_load(why: str) -> str:
    """``why`` with ``busy machine (load L)`` added when the load average was above 0.75 per core (a speed row
    that fails then is reported, not counted)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > (os.cpu_count() or 1) * 0.75:
        return (why + "; " if why else "") + f"busy machine (load {load:.1f})"
    return why


def _static_speed_row(name: str, src: Path, out: Path, feeds: dict[str, np.ndarray], start: float) -> Row:
    threads = static_threads()
    ratio, (lo, hi) = _speed(src, out, feeds, False, threads)
    notes = out.with_suffix(".notes").read_text() if out.with_suffix(".notes").exists() else ""
    said = "static int8 is slower than float" in notes
    ok = lo <= SPEED_TOLERANCE or said
    why = "" if lo <= SPEED_TOLERANCE else (
        "slower than float, as the quantization said" if said else f"slower than float: {ratio:.2f}x [{lo:.2f}-{hi:.2f}]"
    )
    moved = re.search(r"latency check: (\d+) int8 region\(s\) moved back", notes)
    if moved:
        why = (why + "; " if why else "") + f"{moved[1]} region(s) moved back to float"
    why = (why + "; " if why else "") + f"{threads} thread(s)"
    return Row(name, STATIC_SPEED, ok, ratio, None, _with_load(why), time.perf_counter() - start, (lo, hi))


# --- .tflite models converted from Keras by TensorFlow (benchmarks/zoo_keras.py, run under a TF python) ---


@dataclass
class TfliteModel:
    name: str

    @property
    def path(self) -> Path:
        return CACHE / "keras" / f"{self.name}.tflite"

    def specs(self) -> list[dict[str, Any]]:
        import json

        return list(json.loads(self.path.with_suffix(".json").read_text())["inputs"])

    def feeds(self, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        out = {}
        for s in self.specs():
            if s["dtype"].startswith("int"):
                out[s["name"]] = rng.integers(s["low"], s["high"], size=s["shape"]).astype(s["dtype"])
            else:
                out[s["name"]] = rng.uniform(s["low"], s["high"], size=s["shape"]).astype(np.float32)
        return out


def tf_python(create: bool = False) -> tuple[str | None, str]:
    """The python with TensorFlow that converts the Keras models: ``$TENSORSLIM_TF_PYTHON``, else the venv under
    ``benchmarks/.cache/tfvenv`` (made with ``pip install`` :data:`TF_REQUIREMENT` when ``create``); or why there
    is none."""
    import subprocess

    env = os.environ.get(TF_PYTHON_ENV)
    cand = Path(env) if env else TF_VENV / "bin" / "python"
    if not cand.exists() and create and not env:
        print(f"creating {TF_VENV} (pip install {TF_REQUIREMENT})", flush=True)
        ok = (
            subprocess.run([sys.executable, "-m", "venv", str(TF_VENV)]).returncode == 0
            and subprocess.run([str(cand), "-m", "pip", "install", "-q", TF_REQUIREMENT]).returncode == 0
        )
        if not ok:
            return None, f"installing {TF_REQUIREMENT} into {TF_VENV} failed"
    if not cand.exists():
        return None, f"no TensorFlow python: set {TF_PYTHON_ENV} or run with --make-tf-venv"
    probe = subprocess.run([str(cand), "-c", "import tensorflow"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None, f"{cand} cannot import tensorflow: {(probe.stderr.strip().splitlines() or ['?'])[-1][:200]}"
    return str(cand), ""


def export_keras(models: list[TfliteModel], python: str) -> None:
    """Convert (once: cached) the Keras models through ``zoo_keras.py`` under the TF python."""
    import subprocess

    missing = [m.name for m in models if not (m.path.exists() and m.path.with_suffix(".json").exists())]
    if not missing:
        return
    script = Path(__file__).resolve().parent / "zoo_keras.py"
    only = "^(" + "|".join(map(re.escape, missing)) + ")$"
    proc = subprocess.run([python, str(script), str(CACHE / "keras"), "--only", only], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
        raise RuntimeError(f"zoo_keras.py failed ({proc.returncode}): {tail}")


def _run_tflite(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    from tensorslim.runtime.litert import LiteRTRuntime

    rt = LiteRTRuntime(path.read_bytes(), threads=1)
    return [[np.asarray(o).copy() for o in rt.run(f)] for f in feeds]


def run_tflite_mode(m: TfliteModel, mode: str, out_dir: Path) -> Row:
    import tensorslim as ts
    from tensorslim.errors import InputError
    from tensorslim.passes.blockwise_quant import BlockQuantConfig
    from tensorslim.passes.dynamic_quant import DynamicQuantConfig
    from tensorslim.passes.float16 import Float16Config
    from tensorslim.passes.static_quant import StaticQuantConfig

    src = m.path
    out = out_dir / f"{m.name}.{mode}.tflite"
    start = time.perf_counter()
    form = ""
    try:
        with _quiet():
            if mode in ("dynamic", SPEED):
                ts.quantize(src, out)
            elif mode in ("integer", "weight_only"):
                ts.quantize(src, out, config=DynamicQuantConfig(form=mode))
            elif mode == "static":
                from tensorslim.runtime.litert import LiteRTRuntime

                specs = LiteRTRuntime(src.read_bytes(), threads=1).inputs
                feeds = [m.feeds(1000 + i) for i in range(32)]
                data, form = _data_forms(m.name, feeds, {}, specs, out_dir / f"{m.name}.data")
                ts.quantize(src, out, config=StaticQuantConfig(), data=data)
            elif mode == "int4":
                ts.quantize(src, out, config=BlockQuantConfig(bits=4), data=[m.feeds(1000 + i) for i in range(32)])
            elif mode == "prune":
                ts.prune(src, out)
            elif mode == "cluster":
                ts.cluster(src, out)
            elif mode == "pack":
                packed = out.with_suffix(".tslim")
                ts.pack(src, packed)
                ts.unpack(packed, out)
            else:
                ts.quantize(src, out, config=Float16Config())
        if mode == SPEED:
            return _speed_row(m.name, src, out, m.feeds(7), True, start)
        feeds = [m.feeds(100 + i) for i in range(3)]
        cos = _cosine(_run_tflite(src, feeds), _run_tflite(out, feeds))
    except InputError as e:
        return Row(m.name, mode, False, error=f"exit 2: {e}", seconds=time.perf_counter() - start)
    except Exception as e:  # what the CLI reports as an internal error (exit 3)
        tb = traceback.extract_tb(e.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb) if "tensorslim" in f.filename), "")
        msg = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        return Row(m.name, mode, False, error=f"exit 3: {msg} ({where})", seconds=time.perf_counter() - start)
    ratio = (out.with_suffix(".tslim") if mode == "pack" else out).stat().st_size / src.stat().st_size
    ok, why = True, []
    if mode not in ("prune", "cluster") and ratio >= 1.0:
        ok, why = False, [f"not smaller ({ratio:.3f}x)"]
    if mode == "pack":
        import zstandard

        raw = src.read_bytes()
        zstd = len(zstandard.ZstdCompressor(level=19).compress(raw))
        if out.read_bytes() != raw:
            ok, why = False, [*why, "unpacked bytes differ from the .tflite"]
        if out.with_suffix(".tslim").stat().st_size >= zstd:
            ok, why = False, [*why, f"not smaller than zstd -19 of the .tflite ({zstd:,} bytes)"]
    if mode == "weight_only" and ratio > WEIGHT_ONLY_MAX_RATIO:
        ok, why = False, [*why, f"{ratio:.3f}x > {WEIGHT_ONLY_MAX_RATIO}x"]
    if mode in TFLITE_THRESHOLDS and not cos >= TFLITE_THRESHOLDS[mode]:
        ok = False
        why.append(f"cosine {cos:.5f} < {TFLITE_THRESHOLDS[mode]}")
    return Row(m.name, mode, ok, ratio, cos, "; ".join(why), time.perf_counter() - start, form=form)


def _cell(r: Row | None) -> str:
    if r is None:
        return ""
    if r.mode in (SPEED, STATIC_SPEED) and r.ratio is not None and r.interval is not None:
        busy = " (busy)" if "busy" in r.error else ""
        return f"{r.ratio:.2f}x [{r.interval[0]:.2f}-{r.interval[1]:.2f}] {'pass' if r.ok else 'FAIL'}{busy}"
    if r.ratio is None:
        return "FAIL (error)"
    return f"{r.ratio:.2f}x {r.cosine:.4f} {'pass' if r.ok else 'FAIL'}{f' ({r.form})' if r.form else ''}"


def _old_cells(path: Path) -> tuple[list[str], dict[str, dict[str, str]], list[str]]:
    """An existing table file: the prose before the first table, the cells by model and column, the failures."""
    prose: list[str] = []
    cells: dict[str, dict[str, str]] = {}
    fails: list[str] = []
    header: list[str] = []
    seen_table = False
    for line in path.read_text().splitlines():
        if line.startswith("| model |"):
            header, seen_table = [c.strip() for c in line.strip("|").split("|")], True
        elif line.startswith("|---"):
            continue
        elif line.startswith("| ") and header:
            vals = [c.strip() for c in line.strip().strip("|").split("|")]
            cells.setdefault(vals[0], {}).update(dict(zip(header[1:], vals[1:], strict=False)))
        elif line.startswith("- `"):
            fails.append(line)
        elif not seen_table:
            prose.append(line)
    while prose and not prose[-1].strip():
        prose.pop()
    return prose, cells, fails


def write_table(
    rows: list[Row], path: Path, modes: tuple[str, ...], seconds: float, command: str, update: bool = False
) -> None:
    """The tables: ONNX variants (``modes`` and the speed column), then the .tflite models. ``update`` keeps
    the existing file's prose and every cell that ``rows`` does not replace."""
    by: dict[str, dict[str, str]] = {}
    prose: list[str] = []
    old_fails: list[str] = []
    if update and path.exists():
        prose, by, old_fails = _old_cells(path)
    rerun = {r.variant for r in rows}
    for r in rows:
        by.setdefault(r.variant, {})[r.mode] = _cell(r)
    onnx_modes = tuple(dict.fromkeys([*MODES, SPEED, STATIC_SPEED]))
    passed = sum(r.ok for r in rows)
    if not prose:
        prose = [
            "# Zoo: every architecture through every mode",
            "",
            f"`{command}` ({len(by)} models and variants, {passed}/{len(rows)} pass, {seconds / 60:.1f} min). "
            "Random weights, tiny configs, generated inputs; a cell is the size ratio (output / input file), the "
            "worst output cosine over 3 generated batches, and pass/FAIL. Pass: loads and runs in ONNX Runtime "
            "(LiteRT for .tflite), smaller (not required of prune and cluster, which keep tensor shapes), cosine "
            ">= 0.99 (dynamic, integer, weight_only, fp16, int4; .tflite weight_only: >= 0.999 at <= 0.30x), "
            ">= 0.98 (static), bit-exact (pack -> unpack; the ratio is the .tslim file's). speed: the default "
            "mode's latency over the float model's (the median over interleaved rounds of each round's ratio), "
            "timed on one thread, with its 95 % "
            f"interval; pass when the interval's low end is <= {SPEED_TOLERANCE} (not slower by more than noise). "
            "static_speed: the static cell's output timed the same way, its latency check also on one thread; "
            "pass when not slower by more than noise or when the quantization said so.",
        ]
    onnx = [n for n in by if n.split("-op")[0] not in zk.NAMES and n not in zk.NAMES]
    keras = [n for n in by if n in zk.NAMES]
    lines = [*prose, "", "| model | " + " | ".join(onnx_modes) + " |", "|---|" + "---|" * len(onnx_modes)]
    lines += [f"| {n} | " + " | ".join(by[n].get(m, "") for m in onnx_modes) + " |" for n in onnx]
    if keras:
        tmodes = (*TFLITE_MODES, SPEED)
        lines += [
            "",
            "## .tflite models converted from Keras by TensorFlow's converter",
            "",
            "`benchmarks/zoo_keras.py` under a TensorFlow python (`$TENSORSLIM_TF_PYTHON` or `--make-tf-venv`): "
            "Keras applications with `weights=None` and seeded random init at 96x96 (BatchNormalization statistics "
            "from one forward pass), and Keras LSTM/GRU models (Keras 3 converts them to WHILE loops whose bodies "
            "hold the weights); batch 1, float32. Modes: dynamic (the default, `auto`), integer (hybrid kernels "
            "wherever LiteRT has one), weight_only, static (32 generated samples), int4 (INT4 weights per channel; "
            "the 32 samples hold at int8 the weights whose 4 bits cost the output most, until a 0.99 output cosine), "
            "fp16, prune (magnitude 50 %), "
            "cluster (k-means 16, float centroids in place), pack (the .tslim's ratio; unpacks to the .tflite's "
            "exact bytes and is smaller than zstd -19 of it).",
            "",
            "| model | " + " | ".join(tmodes) + " |",
            "|---|" + "---|" * len(tmodes),
        ]
        lines += [f"| {n} | " + " | ".join(by[n].get(m, "") for m in tmodes) + " |" for n in keras]
    fails = [f"- `{r.variant}` {r.mode}: {r.error}" for r in rows if not r.ok]
    fails += [f for f in old_fails if f.split("`")[1] not in rerun]
    if fails:
        lines += ["", "## Failures", "", *fails]
    path.write_text("\n".join(lines) + "\n")


_LINE = re.compile(
    r"^(?P<variant>\S+)\s+(?P<mode>\S+)\s+(?P<ok>pass|FAIL)\s"
    r"(?:(?P<ratio>[0-9.]+)x (?:cos (?P<cos>[0-9.]+)|\[(?P<lo>[0-9.]+)-(?P<hi>[0-9.]+)\]))?\s*"
    r"(?:\(data: (?P<form>\S+)\)\s*)?(?P<error>.*?)\s*\[(?P<secs>[0-9.]+)s\]$"
)


def rows_from_logs(paths: list[Path]) -> list[Row]:
    """The rows printed by earlier runs (later logs win for the same model and mode), to assemble one table."""
    rows: dict[tuple[str, str], Row] = {}
    for p in paths:
        for line in p.read_text().splitlines():
            m = _LINE.match(line)
            if m is None:
                continue
            ratio = float(m["ratio"]) if m["ratio"] else None
            cos = float(m["cos"]) if m["cos"] else None
            ci = (float(m["lo"]), float(m["hi"])) if m["lo"] else None
            ok, secs, form = m["ok"] == "pass", float(m["secs"]), m["form"] or ""
            rows[(m["variant"], m["mode"])] = Row(m["variant"], m["mode"], ok, ratio, cos, m["error"], secs, ci, form)
    return list(rows.values())


def _print(r: Row) -> None:
    if r.ratio is None:
        cell = ""
    elif r.mode in (SPEED, STATIC_SPEED) and r.interval is not None:
        cell = f"{r.ratio:.3f}x [{r.interval[0]:.3f}-{r.interval[1]:.3f}]"
    else:
        cell = f"{r.ratio:.3f}x cos {r.cosine:.5f}" + (f" (data: {r.form})" if r.form else "")
    print(f"{r.variant:32s} {r.mode:12s} {'pass' if r.ok else 'FAIL'} {cell} {r.error} [{r.seconds:.1f}s]", flush=True)


def main(argv: list[str] | None = None) -> int:
    all_modes = tuple(dict.fromkeys([*MODES, *TFLITE_MODES, SPEED, STATIC_SPEED]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}, one variant each (CI)")
    ap.add_argument("--only", default="", help="regular expression on architecture names (keras-* for .tflite)")
    ap.add_argument(
        "--modes", default=",".join(all_modes),
        help=f"comma-separated subset of {','.join(all_modes)} (each model runs those of its format)",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=None, help="the table [default: benchmarks/ZOO.md; --quick: none]")
    ap.add_argument("--update", action="store_true", help="replace only the rerun cells of the table (--out)")
    ap.add_argument("--from-log", type=Path, nargs="+", default=None, help="write the table from run logs only")
    ap.add_argument("--no-keras", action="store_true", help="leave out the .tflite models converted from Keras")
    ap.add_argument(
        "--make-tf-venv", action="store_true",
        help=f"create {TF_VENV} with {TF_REQUIREMENT} when ${TF_PYTHON_ENV} is unset and it does not exist",
    )  # fmt: skip
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    if args.from_log:
        rows = rows_from_logs(args.from_log)
        out = args.out or Path(__file__).resolve().parent / "ZOO.md"
        write_table(rows, out, MODES, sum(r.seconds for r in rows), "python benchmarks/zoo.py", update=args.update)
        print(f"wrote {out}: {sum(r.ok for r in rows)}/{len(rows)} pass")
        return 1 if any(not r.ok for r in rows) else 0
    modes = tuple(m for m in args.modes.split(",") if m)
    unknown = [m for m in modes if m not in all_modes]
    if unknown:
        ap.error(f"--modes: unknown {unknown}; choose from {all_modes}")
    archs = zm.all_archs()
    keras = [TfliteModel(n) for n in zk.NAMES] if not args.no_keras else []
    if args.quick:
        archs = [a for a in archs if a.name in QUICK]
        keras = [k for k in keras if k.name in QUICK]
    if args.only:
        archs = [a for a in archs if re.search(args.only, a.name)]
        keras = [k for k in keras if re.search(args.only, k.name)]
    todo = [v for a in archs for v in (variants(a)[:1] if args.quick else variants(a))]
    out = args.out or (None if args.quick or args.only else Path(__file__).resolve().parent / "ZOO.md")
    if args.update and out is None:
        out = Path(__file__).resolve().parent / "ZOO.md"
    command = "python benchmarks/zoo.py" + (" --quick" if args.quick else "")
    start = time.perf_counter()
    rows: list[Row] = []
    onnx_modes = tuple(m for m in modes if m in (*MODES, SPEED, STATIC_SPEED))
    tflite_modes = tuple(m for m in modes if m in (*TFLITE_MODES, SPEED))
    with tempfile.TemporaryDirectory(prefix="tensorslim-zoo-") as tmp:
        for v in todo if onnx_modes else []:
            try:
                export(v)
            except Exception as e:
                print(f"{v.name}: export failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
                rows += [Row(v.name, m, False, error=f"export failed: {type(e).__name__}") for m in onnx_modes]
                continue
            for m in onnx_modes:
                r = run_mode(v, m, Path(tmp))
                rows.append(r)
                _print(r)
            if out is not None:  # after every model: an interrupted run still leaves its table
                write_table(rows, out, modes, time.perf_counter() - start, command, update=args.update)
        if keras and tflite_modes:
            python, why = tf_python(create=args.make_tf_venv)
            ready = [k for k in keras if k.path.exists() and k.path.with_suffix(".json").exists()]
            if python is None and len(ready) < len(keras):
                print(f"skipping the {len(keras) - len(ready)} Keras .tflite models not in the cache: {why}")
                keras = ready
            elif python is not None:
                try:
                    t0 = time.perf_counter()
                    export_keras(keras, python)
                    print(f"Keras models converted/cached in {time.perf_counter() - t0:.0f} s", flush=True)
                except Exception as e:
                    print(f"Keras export failed: {e}", flush=True)
                    rows += [Row(k.name, m, False, error=f"export failed: {e}") for k in keras for m in tflite_modes]
                    keras = []
            for k in keras:
                for m in tflite_modes:
                    r = run_tflite_mode(k, m, Path(tmp))
                    rows.append(r)
                    _print(r)
                if out is not None:
                    write_table(rows, out, modes, time.perf_counter() - start, command, update=args.update)
    if out is not None:
        print(f"wrote {out}")
    failed = [r for r in rows if not r.ok]
    print(f"{len(rows) - len(failed)}/{len(rows)} pass in {time.perf_counter() - start:.0f} s")
    noisy = [r for r in failed if r.mode in (SPEED, STATIC_SPEED) and "busy" in r.error]
    if noisy:  # timing on a loaded machine says nothing about the model: reported, not counted
        print(f"{len(noisy)} speed row(s) failed on a busy machine: reported, not counted")
    return 1 if len(failed) > len(noisy) else 0


if __name__ == "__main__":
    sys.exit(main())
