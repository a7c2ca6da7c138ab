"""int4 block-wise MiniLM: latency of each int4 kernel against float.

Quantizes MiniLM to int4 blocks of 32 (MatMul and embeddings; no calibration data, the same kernels as with
GPTQ) twice: with tensorslim's default ``integer`` kernel (4-bit ladder blocks rebuilt as int8 at session load,
int8 ``DynamicQuantizeMatMul``) and with ``kernel="matmulnbits"``, of which copies carry accuracy_level 0, 1, 2
and 4. Times them interleaved with the float model at batch 1 and batch 32 (sequence 128). Prints median and
fastest-run ratios to float, and the file sizes.

Usage::

    .venv/bin/python benchmarks/int4_levels.py --threads 1
    .venv/bin/python benchmarks/int4_levels.py --quick      # a few rounds (functional check)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realmodels as rm

CACHE = Path(__file__).resolve().parent / ".cache" / "int4_levels"
LEVELS = (0, 1, 2, 4)


def with_level(model: onnx.ModelProto, level: int) -> onnx.ModelProto:
    """A copy of ``model`` whose MatMulNBits nodes use ``accuracy_level=level``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for node in out.graph.node:
        if node.op_type == "MatMulNBits":
            kept = [a for a in node.attribute if a.name != "accuracy_level"]
            del node.attribute[:]
            node.attribute.extend([*kept, onnx.helper.make_attribute("accuracy_level", level)])
    return out


def main(argv: list[str] | None = None) -> int:
    from tensorslim.api import quantize
    from tensorslim.passes.blockwise_quant import BlockQuantConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    CACHE.mkdir(parents=True, exist_ok=True)
    src = rm.export_minilm(CACHE.parent)
    integer = CACHE / "int4.integer.onnx"
    quantize(src, integer, config=BlockQuantConfig())
    q = CACHE / "int4.onnx"
    quantize(src, q, config=BlockQuantConfig(kernel="matmulnbits"))
    base = onnx.load(str(q))
    paths = [src, integer]
    for level in LEVELS:
        p = CACHE / f"int4.level{level}.onnx"
        onnx.save(with_level(base, level), str(p))
        paths.append(p)
    tok = rm.minilm_tokenizer()
    names = ["float", "int4 integer"] + [f"int4 MatMulNBits level {lv}" for lv in LEVELS]
    size = {n: os.path.getsize(p) / os.path.getsize(src) for n, p in zip(names, paths, strict=True)}
    print(f"size to float: integer {size['int4 integer']:.3f}x, MatMulNBits {size[names[2]]:.3f}x")
    print(f"MiniLM int4 block 32 | {args.threads} thread(s) | ratio to float: median (fastest run)")
    for batch in (1, 32):
        feeds = rm.padded_feeds(tok, rm.load_sentences(batch, offset=1500), seq_len=128)
        runs = (3 if batch == 32 else 6) if args.quick else (16 if batch == 32 else 60)
        stats = rm.time_sessions(paths, feeds, threads=args.threads, runs=runs)
        f_med, f_min = stats[0]["median_ms"], stats[0]["min_ms"]
        cells = [
            f"{n} {s['median_ms'] / f_med:.3f} ({s['min_ms'] / f_min:.3f})" for n, s in zip(names, stats, strict=True)
        ]
        print(f"b{batch} ({runs} rounds, float {f_med:.1f} ms): " + " | ".join(cells[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
