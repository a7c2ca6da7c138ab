"""With calibration data, the int4 mode keeps in int8 the few weights whose 4 bits move the output most.

LiteRT has no block-wise 4-bit form that every kernel honours (see :mod:`~tensorslim.backends.tflite.int4`),
so one scale per output channel is the finest 4-bit grid available, and on some models (DenseNet,
EfficientNet, recurrent text models) the errors of a hundred 4-bit layers add up below the output fidelity
wanted. With data, decide which weights to hold at 8 bits, measured on the data through LiteRT:

1. every weight the plan stores in 4 bits is scored alone: the float model with only that weight replaced by
   its 4-bit values (the dequantized values written over its float bytes: the same graph, so the interpreter
   needs no new kernels), output cosine against the float model on the first 8 samples;
2. weights are promoted to int8 in the order of lost cosine per byte that int8 costs, the fewest that bring
   the whole model (every other weight at 4 bits, the promoted ones at 8) to ``target_cosine`` on every one
   of the first 32 samples, found by doubling then bisection over that order;
3. the real model (hybrid kernels quantize activations too) is checked the same way, holding more weights
   in that order while it misses the target.

The plan is data: :class:`Int4Choice` (the weights held at int8 per subgraph, the scores and cosines), which
:class:`~tensorslim.backends.tflite.int4.TfliteInt4Pass` applies.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tensorslim.algorithms.fidelity import cosine_rows
from tensorslim.algorithms.quantize import choose_qparams, dequantize, quantize
from tensorslim.backends.tflite.dynamic import TfliteWeightPlan
from tensorslim.backends.tflite.int4 import TfliteInt4Config, plan_int4
from tensorslim.backends.tflite.io import serialize
from tensorslim.data import Dataset, batch_size_for
from tensorslim.runtime.litert import LiteRTRuntime

__all__ = ["Int4Choice", "choose_int8", "output_cosine"]

log = logging.getLogger(__name__)

#: Samples of the data the whole-model checks run on (the first ones).
MAX_SAMPLES = 32
#: Samples each weight is scored on alone (the first ones: the scores only rank the weights).
SCORE_SAMPLES = 8


@dataclass
class Int4Choice:
    """Which weights stay int8, and why.

    Attributes:
        int8: subgraph -> names of the weights held at int8.
        cosine_int4: output cosine on the data with every planned weight at 4 bits (fake-quantized).
        cosine: output cosine with the chosen weights at 8 bits (fake-quantized).
        scores: ``(subgraph, name)`` -> output cosine with only that weight at 4 bits.
        candidates: number of weights planned at 4 bits.
    """

    int8: dict[int, frozenset[str]] = field(default_factory=dict)
    cosine_int4: float = 1.0
    cosine: float = 1.0
    scores: dict[tuple[int, str], float] = field(default_factory=dict)
    candidates: int = 0

    @property
    def promoted(self) -> int:
        """Number of weights held at int8."""
        return sum(len(v) for v in self.int8.values())


def output_cosine(reference: list[list[np.ndarray]], approx: list[list[np.ndarray]]) -> float:
    """The worst cosine over samples and outputs (:func:`~tensorslim.algorithms.fidelity.cosine_rows` of each
    output of each batch): every calibration sample must keep the target, not their average."""
    worst = 1.0
    for ref, app in zip(reference, approx, strict=True):
        for r, a in zip(ref, app, strict=True):
            rows = cosine_rows(r, a) if np.ndim(r) > 1 else cosine_rows(np.reshape(r, (1, -1)), np.reshape(a, (1, -1)))
            worst = min(worst, float(rows.min()))
    return worst


@dataclass
class _Candidate:
    subgraph: int
    plan: TfliteWeightPlan
    offset: int
    int4_bytes: bytes
    int8_bytes: bytes

    @property
    def key(self) -> tuple[int, str]:
        return self.subgraph, self.plan.weight.name


def _values_bytes(plan: TfliteWeightPlan, bits: int, dtype: np.dtype, config: TfliteInt4Config) -> bytes:
    w = plan.weight.array
    assert plan.params is not None
    qp = (
        plan.params
        if bits == plan.params.bits
        else choose_qparams(w, bits=bits, scheme="symmetric", axis=plan.params.axis, method=config.range_method)
    )
    values = dequantize(quantize(w, qp), qp)
    return np.ascontiguousarray(values.astype(dtype).astype(dtype.newbyteorder("<"))).tobytes()


def _candidates(model: Any, payload: bytes, config: TfliteInt4Config) -> list[_Candidate]:
    out: list[_Candidate] = []
    for si in range(len(model.subgraphs)):
        for p in plan_int4(model, config, si):
            if p.skipped or p.params is None or p.params.bits != 4:
                continue
            buf = model.buffers[p.weight.buffer]
            raw = np.asarray(buf.data, np.uint8).tobytes()
            offset = payload.find(raw)
            if offset < 0 or payload.find(raw, offset + 1) >= 0:  # not found once verbatim: never promoted
                continue
            dtype = np.dtype(np.float16 if p.weight.source_type == "FLOAT16" else np.float32)
            out.append(
                _Candidate(si, p, offset, _values_bytes(p, 4, dtype, config), _values_bytes(p, 8, dtype, config))
            )
    return out


class _Runner:
    """Runs byte-patched copies of one float model on the data (the copies share the vetted model's graph)."""

    def __init__(self, payload: bytes, data: Dataset, batch: int = 8) -> None:
        self.payload = payload
        self.base = LiteRTRuntime(payload)  # vetted: structural checks and a crash probe
        self.feeds = []
        self.score_batches = 0  # the batches covering the first SCORE_SAMPLES samples
        for f, sl in data.batches(batch_size_for(self.base.inputs, batch)):
            self.feeds.append(f)
            if sl.start < SCORE_SAMPLES:
                self.score_batches += 1
            if sl.stop >= MAX_SAMPLES:
                break
        self.reference = self._run(self.base)

    def _run(self, rt: LiteRTRuntime, batches: int | None = None) -> list[list[np.ndarray]]:
        return [[np.asarray(o).copy() for o in rt.run(f)] for f in self.feeds[:batches]]

    def cosine_of(self, payload: bytes) -> float:
        """Output cosine of another model with the same inputs and outputs (vetted: a new graph)."""
        return output_cosine(self.reference, self._run(LiteRTRuntime(payload)))

    def cosine(self, patches: list[tuple[int, bytes]], *, score: bool = False) -> float:
        """Output cosine of the float model with ``patches`` (offset, bytes) written over it; on the first
        :data:`SCORE_SAMPLES` samples only when ``score``."""
        from ai_edge_litert.interpreter import Interpreter

        buf = bytearray(self.payload)
        for offset, data in patches:
            buf[offset : offset + len(data)] = data
        rt = copy.copy(self.base)  # the same graph with other constant values: no new vetting needed
        rt.interpreter = Interpreter(model_content=bytes(buf))
        rt.interpreter.allocate_tensors()
        n = self.score_batches if score else None
        return output_cosine(self.reference[:n], self._run(rt, n))


def choose_int8(
    model: Any,
    config: TfliteInt4Config,
    data: Dataset,
    *,
    target_cosine: float,
    build: Callable[[dict[int, frozenset[str]]], bytes] | None = None,
) -> Int4Choice:
    """The fewest weights to hold at int8 so that the model's output cosine on ``data`` reaches
    ``target_cosine`` (measured with fake-quantized float models; see the module docstring).

    ``build`` (the held weights -> the serialized quantized model) checks the choice on the real model, whose
    hybrid kernels also quantize activations: while it misses the target, more weights are held, in order.
    """
    payload = serialize(model)
    cands = _candidates(model, payload, config)
    choice = Int4Choice(candidates=len(cands))
    if not cands:
        return choice
    runner = _Runner(payload, data)

    def cos_with(promoted: int, order: list[_Candidate]) -> float:
        return runner.cosine([(c.offset, c.int8_bytes if i < promoted else c.int4_bytes) for i, c in enumerate(order)])

    choice.cosine_int4 = choice.cosine = cos_with(0, cands)
    if choice.cosine_int4 >= target_cosine:
        if build is None:
            return choice
        choice.cosine = runner.cosine_of(build({}))  # hybrid kernels add the activations' rounding
        if choice.cosine >= target_cosine:
            return choice
    for c in cands:
        choice.scores[c.key] = runner.cosine([(c.offset, c.int4_bytes)], score=True)
    order = sorted(cands, key=lambda c: -(1.0 - choice.scores[c.key]) / max(c.plan.weight.size, 1))
    if choice.cosine_int4 >= target_cosine:  # only the real model misses: hold weights from the first on
        hi = 1
    else:
        hi = _fewest(lambda k: cos_with(k, order), len(order), target_cosine, choice.cosine_int4)
    choice.int8 = _held(order[:hi])
    if build is None:
        choice.cosine = cos_with(hi, order)
    while build is not None:
        real = runner.cosine_of(build(choice.int8))
        choice.cosine = real
        if real >= target_cosine or hi >= len(order):
            break
        hi = min(len(order), hi + max(1, hi // 2))
        choice.int8 = _held(order[:hi])
    log.info("int4: %d of %d weights held at int8: cosine %.5f -> %.5f", hi, len(order), choice.cosine_int4,
             choice.cosine)  # fmt: skip
    return choice


def _fewest(cosine: Callable[[int], float], n: int, target: float, at_zero: float) -> int:
    """The smallest count ``k`` in ``0..n`` whose ``cosine(k)`` reaches ``target`` (doubling, then bisection;
    ``n`` when none does), assuming more held weights never lose fidelity."""
    lo, hi, k = 0, n, 1
    if at_zero >= target:
        return 0
    while k < n:
        if cosine(k) >= target:
            hi = k
            break
        lo, k = k, 2 * k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if cosine(mid) >= target else (mid, hi)
    return hi


def _held(cands: list[_Candidate]) -> dict[int, frozenset[str]]:
    by_sg: dict[int, set[str]] = {}
    for c in cands:
        by_sg.setdefault(c.subgraph, set()).add(c.plan.weight.name)
    return {si: frozenset(names) for si, names in by_sg.items()}
