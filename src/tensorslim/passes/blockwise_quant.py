"""Block-wise int4/int8 weights for MatMul and Gather.

Before -> after, with ``kernel="matmulnbits"`` (weight-only, ONNX Runtime's contrib kernels)::

    MatMul(A, W[K, N])       ->  com.microsoft.MatMulNBits(A, B_packed[N, K/bs, bs*bits/8], scales, [zp])
    Gather(E[V, D], ids)     ->  com.microsoft.GatherBlockQuantized(E_packed, ids, scales, [zp])

With ``kernel="integer"`` (4 bits; the default ``auto`` picks it for 4 bits) MatMul/Gemm weights are stored as
4-bit *ladder* blocks whose scales are integer multiples of a per-channel int8 step; ONNX Runtime rebuilds the
int8 weight once at session load and runs its int8 ``DynamicQuantizeMatMul`` kernels on activations quantized
at run time, behind block-Hadamard rotations (see :mod:`tensorslim.passes.dynamic_quant`, ``weight_bits=4``).
Same file size, but on x86 CPUs MatMulNBits (every ``accuracy_level``) runs slower than float MatMul while
the integer kernels run faster (``benchmarks/int4_levels.py``). Embeddings use GatherBlockQuantized either way.

Weights are cut into blocks of ``block_size`` values along the reduction axis (``K`` for MatMul, the
feature axis for embeddings), each with its own scale (and zero point when asymmetric). ``accuracy_level``
4 lets MatMulNBits run int8 kernels on activations quantized per block (ONNX Runtime's advice for speed; on
this project's x86 CPU every level measured slower than float MatMul, level 4 the slowest).
Scale choice: round-to-nearest over the block's min/max, or MSE-optimal clipping per block.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import ml_dtypes
import numpy as np
import onnx
from onnx import helper

from tensorslim._regex import NameMatcher, name_matcher
from tensorslim.algorithms.blockwise import dequantize_blocks, pack_nibbles, quantize_blocks
from tensorslim.algorithms.fidelity import sqnr_db
from tensorslim.algorithms.gptq import gptq_blocks
from tensorslim.algorithms.quantize import QuantScheme
from tensorslim.backends.onnx.editor import GraphEditor, opset_version
from tensorslim.backends.onnx.weights import WeightInfo, WeightRole, WeightUse, find_weights
from tensorslim.data import Dataset
from tensorslim.errors import ConfigError, InputError
from tensorslim.passes._config import coerce_enums, regex_tuple
from tensorslim.passes.base import Pass, PassResult, WeightRecord
from tensorslim.passes.calib_stats import LayerInput, LazyGrams, mean_sample_sqnr
from tensorslim.passes.dynamic_quant import DynamicQuantConfig, DynamicQuantPass
from tensorslim.passes.static_sensitivity import added_error

__all__ = ["BlockKernel", "BlockMethod", "BlockQuantConfig", "BlockQuantPass"]

_OPS = ("MatMul", "Gemm", "Gather", "Conv")
_RNN_OPS = ("LSTM", "GRU", "RNN")


class BlockMethod(StrEnum):
    """How block values are rounded: ``auto`` is ``gptq`` with calibration data, ``mse`` without."""

    AUTO = "auto"
    MSE = "mse"
    MINMAX = "minmax"
    GPTQ = "gptq"


class BlockKernel(StrEnum):
    """What MatMul/Gemm weights run on: int8 kernels over 4-bit ladder blocks, or MatMulNBits."""

    AUTO = "auto"
    INTEGER = "integer"
    MATMULNBITS = "matmulnbits"


@dataclass(frozen=True)
class BlockQuantConfig:
    """Configuration of block-wise weight-only quantization.

    Attributes:
        bits: 4 or 8.
        block_size: values per block, a power of two from 16 to 256.
        scheme: ``symmetric`` (no zero points stored) or ``asymmetric``.
        method: ``mse`` (MSE-optimal clipping per block), ``minmax`` (round to nearest over the full range),
            ``gptq`` (MatMul weights: GPTQ error compensation on calibration data; embeddings: ``mse``), or
            ``auto`` (the default: ``gptq`` when calibration data is given, ``mse`` otherwise).
        accuracy_level: MatMulNBits ``accuracy_level`` (4: int8 compute; 0: float).
        kernel: what MatMul/Gemm weights run on: ``integer`` (4-bit ladder blocks rebuilt as int8 at session
            load, int8 kernels with run-time activation quantization; symmetric blocks, ``scheme`` and
            ``accuracy_level`` then apply to embeddings only), ``matmulnbits`` (weight-only MatMulNBits), or
            ``auto`` (the default: ``integer`` for 4 bits, ``matmulnbits`` for 8).
        op_types: any of ``MatMul``, ``Gemm``, ``Gather``, ``Conv``. Conv weights take 4-bit blocks with the
            ``integer`` kernel only, dequantized once at session load (float Conv: float speed, 4-bit file; GPTQ
            for group-1 Convs); Conv weights whose ``C_in * kh * kw`` is not a multiple of the block stay int8.
        exclude: regular expressions on node names that stay float.
        min_size: weights with fewer elements stay float.
        output_sqnr_db: with calibration data and the ``integer`` kernel, the 4-bit model's outputs must keep this
            SQNR (dB, the mean over up to 8 calibration samples of each sample's worst output) against float;
            while they do not, the 4-bit MatMul/Gemm/Conv weights that add the most error take int8 codes
            instead, a tenth at a time (each decision and its measure in the weight's record). 0 turns it off.
    """

    bits: int = 4
    block_size: int = 32
    scheme: QuantScheme | str = QuantScheme.ASYMMETRIC
    method: BlockMethod | str = BlockMethod.AUTO
    accuracy_level: int = 4
    kernel: BlockKernel | str = BlockKernel.AUTO
    op_types: tuple[str, ...] = _OPS
    exclude: tuple[str, ...] = ()
    min_size: int = 1024
    output_sqnr_db: float = 20.0

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ConfigError(f"bits: {self.bits!r} is not one of 4, 8")
        bs = self.block_size
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 16 or bs > 256 or bs & (bs - 1):
            raise ConfigError(f"block_size: must be a power of two from 16 to 256, got {bs!r}")
        coerce_enums(self, (("scheme", QuantScheme), ("method", BlockMethod)))
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise ConfigError(f"accuracy_level: {self.accuracy_level!r} is not one of 0, 1, 2, 3, 4")
        coerce_enums(self, (("kernel", BlockKernel),))
        if self.kernel == "integer" and self.bits != 4:
            raise ConfigError("kernel: 'integer' stores 4-bit blocks (bits 4); 8-bit weights on integer kernels are "
                             "dynamic quantization (--mode dynamic)")  # fmt: skip
        ops = tuple(self.op_types)
        if not ops or any(o not in _OPS for o in ops):
            raise ConfigError(f"op_types: {ops!r}; allowed: {', '.join(_OPS)}")
        if isinstance(self.output_sqnr_db, bool) or not isinstance(self.output_sqnr_db, int | float) or not (
            0 <= self.output_sqnr_db <= 100
        ):
            raise ConfigError(f"output_sqnr_db: a number of dB from 0 (off) to 100, got {self.output_sqnr_db!r}")
        object.__setattr__(self, "op_types", ops)
        object.__setattr__(self, "exclude", regex_tuple("exclude", self.exclude))


def _int4(codes: np.ndarray, signed: bool) -> np.ndarray:
    """Unsigned 4-bit codes (one per uint8) as ``ml_dtypes.uint4``, or shifted by -8 as ``ml_dtypes.int4`` when
    ``signed`` (codes of symmetric blocks, zero point 8): ONNX stores either as a packed 4-bit tensor."""
    if signed:
        return np.asarray(codes.astype(np.int16) - 8, dtype=ml_dtypes.int4)
    return np.asarray(codes, dtype=ml_dtypes.uint4)


def _held_out(data: Dataset) -> tuple[Dataset, Dataset]:
    """``(fit, check)``: with 16 samples or more, the last quarter (at most 8, a multiple of the model's fixed
    batch) is held out of GPTQ to check the output on; else both are ``data`` (at most 8 samples checked).

    On samples GPTQ fit, its compensation looks better than it is: on the zoo's DeiT with 8 samples of 17
    tokens, 26.6 dB there against 15.9 dB on new samples (round-to-nearest: 18.8 dB on both)."""
    n, k = data.num_samples, data.fixed_batch or 1
    held = (min(8, n // 4) // k) * k
    if n < 16 or held < 1:
        return data, data.head(8) if n > 8 else data
    fit = data.head(n - held)
    groups, skip = [], n - held
    for g in data.groups:
        c = int(next(iter(g.values())).shape[0]) if g else 0
        if skip < c:
            groups.append({name: v[skip:] for name, v in g.items()})
        skip = max(0, skip - c)
    labels = None if data.labels is None else data.labels[n - held :]
    return fit, data.like(groups, labels=labels)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _ensure_ms_domain(model: onnx.ModelProto) -> None:
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


class BlockQuantPass(Pass):
    """Replace MatMul and embedding Gather weights by block-quantized int4/int8 contrib kernels."""

    name = "blockwise_quant"

    def __init__(self, config: BlockQuantConfig | None = None, *, data: Dataset | None = None) -> None:
        cfg = config or BlockQuantConfig()
        if cfg.method == "auto":
            cfg = dataclasses.replace(cfg, method="gptq" if data is not None else "mse")
        self.config = cfg
        if self.config.method == "gptq" and data is None:
            raise InputError("method gptq needs calibration data: pass --data CALIB.npz (or use --method mse)")
        self.data = data

    def _hessians(self, model: onnx.ModelProto, weights: list[WeightInfo]) -> Mapping[str, np.ndarray]:
        """``X^T X`` of the input of every MatMul to be quantized, streamed over the calibration data."""
        if self.config.method != "gptq" or self.data is None:
            return {}
        layers = {w.name: LayerInput(activation=w.weight_uses[0].node.input[0]) for w in weights}
        sizes = {w.name: int(w.array.shape[1 if w.weight_uses[0].channel_axis == 0 else 0]) for w in weights}
        return LazyGrams(model, layers, self.data, sizes) if layers else {}

    @property
    def kernel(self) -> str:
        """The MatMul kernel ``auto`` resolves to: ``integer`` for 4 bits, ``matmulnbits`` for 8."""
        k = self.config.kernel
        return k if k != "auto" else ("integer" if self.config.bits == 4 else "matmulnbits")

    def call(self, model: onnx.ModelProto) -> PassResult:
        """Quantize every eligible weight of ``model`` in place (the base class hands us a copy)."""
        matmul_ops: tuple[str, ...] = tuple(o for o in ("MatMul", "Gemm", "Conv") if o in self.config.op_types)
        if "MatMul" in matmul_ops:  # LSTM/GRU/RNN W and R: 4-bit ladder blocks dequantized at load, as Conv
            matmul_ops = (*matmul_ops, *_RNN_OPS)
        if self.kernel != "integer" or not matmul_ops:
            return self._call_nbits(model)
        if opset_version(model) < 11:  # no integer MatMul before opset 11
            if self.config.kernel == "integer":
                raise InputError(
                    f"kernel 'integer' needs ONNX opset >= 11 (this model: {opset_version(model)}); "
                    "use --kernel matmulnbits, or convert the model to a newer opset"
                )
            return self._call_nbits(model)
        if self.config.method != "gptq" or self.data is None or self.config.output_sqnr_db <= 0:
            return self._call_integer(model, matmul_ops, {})
        source = onnx.ModelProto()
        source.CopyFrom(model)
        return self._output_guard(source, model, matmul_ops)

    def _output_guard(self, source: onnx.ModelProto, model: onnx.ModelProto, matmul_ops: tuple[str, ...]) -> PassResult:
        """While the 4-bit model's outputs keep less than ``output_sqnr_db`` against float on calibration samples,
        give the 4-bit weights that add the most error int8 codes instead, a tenth of them at a time.

        A weight's added error is measured at its layer's output, against the same model with every weight int8
        (same rotations, same tensors): the layer's noise-to-signal ratio less the largest of its input's. The
        state kept is the first that meets the threshold, else the one with the best output SQNR."""
        cfg = self.config
        assert self.data is not None
        fit, sample = _held_out(self.data)
        held = sample is not fit
        res = self._call_integer(model, matmul_ops, {}, fit)
        four = {r.name: r for r in res.records if r.action.startswith("int4")}
        if not four:
            return res
        nodes = {n.name: n for n in source.graph.node}
        int8: dict[str, str] = {}
        best: tuple[float, int, PassResult] | None = None
        reference: onnx.ModelProto | None = None
        rounds = 0
        first = last = 0.0
        for rounds in range(1, 9):
            last = mean_sample_sqnr(source, res.model, sample)
            first = first if rounds > 1 else last
            if best is None or last > best[0]:
                best = (last, len(int8), res)
            if last >= cfg.output_sqnr_db:
                best = (last, len(int8), res)
                break
            left = [n for n in four if n not in int8]
            if not left:
                break
            if reference is None:
                reference = self._call_integer(_copy(source), matmul_ops, dict.fromkeys(four, "reference"), fit).model
            layer = {w: nodes[four[w].nodes.split(",")[0]] for w in left if four[w].nodes.split(",")[0] in nodes}
            added = added_error(reference, res.model, layer.values(), sample, lambda n: list(n.input[:1]))
            by_weight = {w: added.get(n.name, float("inf")) for w, n in layer.items()}
            ranked = sorted(left, key=lambda w: (by_weight.get(w, float("inf")), w))
            for w in ranked[: max(1, -(-len(four) // 10))]:
                int8[w] = (f"output check: the 4-bit model kept {last:.1f} dB < {cfg.output_sqnr_db:g} dB against "
                           f"float; int4 here adds {by_weight.get(w, float('inf')):.1f} dB at the layer's output")
            res = self._call_integer(_copy(source), matmul_ops, int8, fit)
        assert best is not None
        sq, moved, chosen = best
        size = sum(r.bytes_after for r in chosen.records)
        where = (f"{sample.num_samples} held-out calibration samples (GPTQ fit on the other {fit.num_samples})" if held
                 else f"{sample.num_samples} calibration samples (those GPTQ fit: optimistic; give 16 or more "
                 "samples for a held-out check)")  # fmt: skip
        if moved:
            chosen.notes.append(
                f"output check: 4-bit output SQNR {first:.1f} dB against float on {where} (< {cfg.output_sqnr_db:g} "
                f"dB): {moved} of {len(four)} 4-bit weight(s) that add the most error take int8 codes -> {sq:.1f} dB "
                f"({size} bytes of weights)"
            )
        else:
            chosen.notes.append(f"output check: 4-bit output SQNR {first:.1f} dB against float on {where} "
                                f"(>= {cfg.output_sqnr_db:g} dB)")  # fmt: skip
        return chosen

    def _call_integer(
        self, model: onnx.ModelProto, matmul_ops: tuple[str, ...], int8_weights: Mapping[str, str],
        data: Dataset | None = None,
    ) -> PassResult:  # fmt: skip
        cfg = self.config
        data = data if data is not None else self.data
        first = DynamicQuantPass(
            DynamicQuantConfig(
                op_types=matmul_ops, exclude=cfg.exclude, min_size=cfg.min_size, weight_bits=4,
                block_size=cfg.block_size, range_method="minmax" if cfg.method == "minmax" else "mse",
                min_integer_macs=0,  # int4 on int8 kernels: the kernel is the point (--kernel picks another)
            ),
            data=data if cfg.method == "gptq" else None, int8_weights=int8_weights,
        ).call(model)  # fmt: skip
        if cfg.method != "gptq" and any(r.action.startswith("int4") for r in first.records):
            first.notes.append(
                "int4 without calibration data: round-to-nearest blocks on int8 kernels; GPTQ with --data is much "
                "more accurate (MiniLM mean cosine 0.961 -> 0.989), --kernel matmulnbits is weight-only (0.974)"
            )
        rest = tuple(o for o in cfg.op_types if o not in matmul_ops)
        if not rest:
            return first
        second = BlockQuantPass(dataclasses.replace(cfg, op_types=rest, kernel="matmulnbits"), data=self.data)
        res = second._call_nbits(first.model)
        # one record per original weight: the embeddings' come from the second pass
        original = {r.name for r in first.records}
        first_done = {r.name for r in first.records if not r.skipped}
        second_done = {r.name for r in res.records if not r.skipped and r.name in original - first_done}
        merged = [r for r in first.records if r.name not in second_done]
        merged += [r for r in res.records if r.name in second_done]
        return PassResult(res.model, first.modified or res.modified, merged, [*first.notes, *res.notes])

    def _call_nbits(self, model: onnx.ModelProto) -> PassResult:
        cfg = self.config
        excluded = name_matcher(cfg.exclude)
        editor = GraphEditor(model)
        records: list[WeightRecord] = []
        weights = find_weights(model)
        todo = [
            w for w in weights
            if not self._skip_reason(w, w.weight_uses, excluded)
            and w.weight_uses[0].role in (WeightRole.MATMUL, WeightRole.GEMM)
        ]  # fmt: skip
        hessians = self._hessians(model, todo)
        for w in weights:
            uses = w.weight_uses
            base: dict[str, Any] = {
                "name": w.name,
                "ops": ",".join(dict.fromkeys(u.op_type for u in w.uses)),
                "nodes": ",".join(dict.fromkeys(u.node_name for u in w.uses)),
                "shape": tuple(int(d) for d in w.array.shape),
                "bytes_before": w.nbytes,
            }
            reason = self._skip_reason(w, uses, excluded)
            if reason:
                records.append(WeightRecord(**base, action="skipped", reason=reason, bytes_after=w.nbytes))
                continue
            use = uses[0]
            matmul = use.role in (WeightRole.MATMUL, WeightRole.GEMM)
            # MatMulNBits wants one row per output channel: W^T for MatMul, W itself for Gemm(transB=1)
            rows_first = use.role is WeightRole.EMBEDDING or use.channel_axis == 0
            rows = np.ascontiguousarray(w.array if rows_first else w.array.T).astype(np.float32)
            if w.name in hessians and rows.shape[1] % cfg.block_size == 0:
                bq = gptq_blocks(rows, hessians[w.name], bits=cfg.bits, block=cfg.block_size, scheme=cfg.scheme)
                method = "gptq"
            else:
                method = "mse" if cfg.method == "gptq" else cfg.method
                bq = quantize_blocks(rows, bits=cfg.bits, block=cfg.block_size, scheme=cfg.scheme, method=method)
            n_rows = rows.shape[0]
            codes = bq.codes.reshape(n_rows, bq.blocks, cfg.block_size)
            data = pack_nibbles(codes) if cfg.bits == 4 else codes
            as_const = w.source == "constant"
            symmetric = cfg.scheme is QuantScheme.SYMMETRIC
            zp_name = ""
            if not symmetric:
                zps = pack_nibbles(bq.zero_points) if cfg.bits == 4 else bq.zero_points
            node = use.node
            if matmul:
                d = editor.add_tensor(w.scope, f"{w.name}_nbits", data, as_constant=as_const)
                s = editor.add_tensor(w.scope, f"{w.name}_scales", bq.scales.reshape(-1), as_constant=as_const)
                if not symmetric:
                    zp_name = editor.add_tensor(w.scope, f"{w.name}_zero_points", zps.reshape(-1), as_constant=as_const)
                n, k = rows.shape
                bias = node.input[2] if use.role is WeightRole.GEMM and len(node.input) > 2 else ""
                extra = [zp_name, "", bias] if bias else ([zp_name] if zp_name else [])
                new = editor.node(
                    "MatMulNBits", [node.input[0], d, s, *extra], list(node.output),
                    node.name or f"{w.name}_MatMulNBits", domain="com.microsoft", K=k, N=n, bits=cfg.bits,
                    block_size=cfg.block_size, accuracy_level=cfg.accuracy_level,
                )  # fmt: skip
            else:
                # 4 bits: uint4 tensors and no ``bits`` attribute, the form every release with the op loads (1.20+;
                # uint8-packed data with ``bits`` needs 1.23); 8 bits exist only in that newer form
                as4 = cfg.bits == 4
                # (symmetric: signed int4 codes, whose default zero point is 0; uint4's default is 0 too, not 8)
                table = _int4(codes.reshape(n_rows, -1), symmetric) if as4 else data.reshape(n_rows, -1)
                d = editor.add_tensor(w.scope, f"{w.name}_blockq", table, as_constant=as_const)
                # float16 scales halve their share of the table; only the gathered rows are cast back
                s = editor.add_tensor(w.scope, f"{w.name}_scales", bq.scales.astype(np.float16), as_constant=as_const)
                if not symmetric:
                    zp_table = _int4(bq.zero_points, False) if as4 else zps
                    zp_name = editor.add_tensor(w.scope, f"{w.name}_zero_points", zp_table, as_constant=as_const)
                half = editor.names(f"{node.output[0]}_float16")
                new = editor.node(
                    "GatherBlockQuantized", [d, node.input[1], s, *([zp_name] if zp_name else [])],
                    [half], node.name or f"{w.name}_GatherBlockQuantized", domain="com.microsoft",
                    gather_axis=0, quantize_axis=1, block_size=cfg.block_size, **({} if as4 else {"bits": cfg.bits}),
                )  # fmt: skip
                cast = editor.node("Cast", [half], [node.output[0]], f"{w.name}_CastFloat", to=onnx.TensorProto.FLOAT)
            editor.replace(node, [new] if matmul else [new, cast])
            editor.drop_weight(w.scope, w.name, w.source)
            scale_bytes = bq.scales.nbytes if matmul else bq.scales.nbytes // 2
            after = int(data.nbytes + scale_bytes + (0 if symmetric else zps.nbytes))
            restored = dequantize_blocks(bq)
            records.append(
                WeightRecord(
                    **base,
                    action=f"int{cfg.bits} block-wise ({'MatMulNBits' if matmul else 'GatherBlockQuantized'})",
                    reason=f"block {cfg.block_size}, {cfg.scheme}, {method}",
                    bytes_after=after,
                    granularity=f"per_block({cfg.block_size})",
                    sqnr_db=round(sqnr_db(rows, restored), 2),
                )
            )
        editor.apply()
        modified = any(not r.skipped for r in records)
        if modified:
            _ensure_ms_domain(model)
        four = (onnx.TensorProto.UINT4, onnx.TensorProto.INT4)
        if any(t.data_type in four for t in model.graph.initializer):
            model.ir_version = max(model.ir_version, 10)  # 4-bit tensors need IR 10
        return PassResult(model, modified, records)

    def _skip_reason(self, w: WeightInfo, uses: list[WeightUse], excluded: NameMatcher) -> str:
        cfg = self.config
        if not uses:
            return f"consumed only by {', '.join(sorted({u.op_type for u in w.uses}))} (no weight role)"
        if w.array.dtype != np.float32:
            return f"{w.array.dtype} tensor; block-wise quantization takes float32 weights"
        if len(uses) != len(w.uses) or len(uses) != 1:
            return "shared by several nodes; block-wise kernels take a weight of their own"
        use = uses[0]
        if use.op_type not in cfg.op_types or use.role not in (
            WeightRole.MATMUL,
            WeightRole.GEMM,
            WeightRole.EMBEDDING,
        ):
            if use.op_type in cfg.op_types and use.role is WeightRole.CONV:
                return f"{use.op_type}: MatMulNBits takes MatMul/Gemm weights; Conv takes 4-bit blocks (kernel integer)"
            return f"{use.op_type} ({use.role.value}): int{cfg.bits} blocks cover MatMul, Gemm, Gather, Conv weights"
        if use.role is WeightRole.GEMM:
            attrs = {a.name: helper.get_attribute_value(a) for a in use.node.attribute}
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                return "Gemm with transA, alpha or beta: block-wise kernels take a plain product"
        if w.array.ndim != 2:
            return f"{w.array.ndim}-D weight; block-wise kernels take 2-D weights"
        if use.role is WeightRole.EMBEDDING and (use.channel_axis != 1 or w.array.shape[1] % cfg.block_size):
            return f"embedding width {w.array.shape[1]} is not a multiple of the block size {cfg.block_size}"
        if excluded(use.node_name):
            return f"node {use.node_name!r} matches an exclude pattern"
        if w.size < cfg.min_size:
            return f"{w.size} elements < min size {cfg.min_size}"
        if not np.all(np.isfinite(w.array)):
            return "holds NaN or infinite values"
        return ""
