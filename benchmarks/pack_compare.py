"""``tensorslim pack --compare`` on every model of the suite, float and every compressed variant.

For each model (the bundled digits CNN, MiniLM, RapidOCR det/rec/cls: the same files and calibration samples as
``benchmarks/suite.py --quick``) every variant is built (float; dynamic int8 in its default, integer and weight-only
forms; int4 GPTQ; fp16; static int8; entropy-coded uniform int8; 50 % pruned; 16-cluster), saved as ONNX,
packed, unpacked and checked bit-exact against its ONNX file. The table: ONNX bytes, zstd -19 and lzma (xz -9e)
of the ONNX file, the ``.tslim`` bytes, whether the ``.tslim`` is the smallest of the three, and the bit-exact
check. Sizes are deterministic; no times are printed. Exit status 1 if any row is not the smallest or not
bit-exact.

Usage::

    python benchmarks/pack_compare.py            # every model (MiniLM's lzma -9e takes a while; sizes are cached)
    python benchmarks/pack_compare.py --quick    # the digits model only (CI)
    python benchmarks/pack_compare.py --only det rec
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

import realmodels as rm

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache" / "pack_compare"
Feeds = dict[str, np.ndarray]
Build = Callable[[Path, Path, Feeds], None]


def _quantize(config: Any, with_data: bool) -> Build:
    """``tensorslim.quantize`` with ``config`` (the calibration samples when ``with_data``)."""

    def build(src: Path, dst: Path, calib: Feeds) -> None:
        import tensorslim as ts

        ts.quantize(src, dst, config=config, data=ts.Dataset(calib) if with_data else None)

    return build


def _pass(make: Callable[[Any], Any]) -> Build:
    """A pass built by ``make(data)`` applied to the model."""

    def build(src: Path, dst: Path, calib: Feeds) -> None:
        import tensorslim as ts

        onnx.save(make(ts.Dataset(calib))(onnx.load(str(src))).model, str(dst))

    return build


def variants() -> list[tuple[str, Build]]:
    """(label, builder) in table order; the float model itself is the first row."""
    from tensorslim.passes.blockwise_quant import BlockQuantConfig
    from tensorslim.passes.cluster import ClusterConfig, ClusterPass
    from tensorslim.passes.dynamic_quant import DynamicQuantConfig
    from tensorslim.passes.float16 import Float16Config
    from tensorslim.passes.prune import PruneConfig, PrunePass
    from tensorslim.passes.static_quant import StaticQuantConfig
    from tensorslim.passes.uniform_quant import UniformQuantConfig, UniformQuantPass

    return [
        ("dynamic int8", _quantize(None, False)),
        ("dynamic int8 integer", _quantize(DynamicQuantConfig(form="integer"), False)),
        ("weight-only int8", _quantize(DynamicQuantConfig(form="weight_only"), False)),
        ("int4 GPTQ", _quantize(BlockQuantConfig(), True)),
        ("fp16", _quantize(Float16Config(), True)),
        ("static int8", _quantize(StaticQuantConfig(), True)),
        ("uniform gptq", _pass(lambda d: UniformQuantPass(UniformQuantConfig(), d))),
        ("pruned 50%", _pass(lambda d: PrunePass(PruneConfig(sparsity=0.5)))),
        ("clustered 16", _pass(lambda d: ClusterPass(ClusterConfig(clusters=16), d))),
    ]


def plain_sizes(path: Path) -> dict[str, int]:
    """zstd -19 and lzma (xz -9e) of a file, cached by content hash (lzma -9e of 90 MB takes minutes)."""
    import zstandard

    from tensorslim.algorithms.entropy import LZMA_PRESET

    raw = path.read_bytes()
    cache = CACHE / "plain_sizes.json"
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    key = hashlib.sha256(raw).hexdigest()
    if key not in known:
        known[key] = {"zstd19": len(zstandard.ZstdCompressor(level=19).compress(raw)),
                      "lzma9e": len(lzma.compress(raw, preset=LZMA_PRESET))}  # fmt: skip
        cache.write_text(json.dumps(known, indent=1))
    return dict(known[key])


def measure(label: str, onnx_path: Path) -> dict[str, Any]:
    """Pack, unpack (bit-exact check) and compare one ONNX file."""
    from tensorslim.pack import pack_model, unpack_model

    tslim = onnx_path.with_suffix(".tslim")
    rep = pack_model(onnx_path, tslim)
    unpacked = onnx_path.with_suffix(".unpacked.onnx")
    unpack_model(tslim, unpacked)
    base = plain_sizes(onnx_path)
    return {"variant": label, "onnx": onnx_path.stat().st_size, **base, "tslim": rep.file_bytes,
            "smallest": rep.file_bytes < min(base.values()), "exact": unpacked.read_bytes() == onnx_path.read_bytes()}  # fmt: skip


def cases(only: Sequence[str] | None, quick: bool) -> list[tuple[str, Callable[[], tuple[Path, Feeds]]]]:
    """(model name, () -> (float path, calibration feeds)): the suite's models and calibration samples."""
    import suite

    args = suite.parse_args(["--quick"])  # the quick suite's calibration samples: sizes are measured, not accuracy

    def digits() -> tuple[Path, Feeds]:
        c = suite.digits_case(args)
        return c.src, c.calib

    def minilm() -> tuple[Path, Feeds]:
        c = suite.minilm_case(args)
        return c.src, c.calib

    ocr: dict[str, Any] = {}

    def ocr_case(name: str) -> Callable[[], tuple[Path, Feeds]]:
        def get() -> tuple[Path, Feeds]:
            if not ocr:
                ocr.update({c.name: c for c in suite.ocr_cases(args)})
            c = ocr[f"RapidOCR {name}"]
            return c.src, c.calib

        return get

    out = [("digits", digits)]
    if not quick:
        out += [("MiniLM", minilm), ("det", ocr_case("det")), ("rec", ocr_case("rec")), ("cls", ocr_case("cls"))]
    return [(n, f) for n, f in out if not only or n.lower() in {o.lower() for o in only}]


def main(argv: Sequence[str] | None = None) -> int:
    """Build, pack and compare every variant of every model; print one table per model."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the digits model only")
    ap.add_argument("--only", nargs="*", help="model names (digits, MiniLM, det, rec, cls)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    result: dict[str, list[dict[str, Any]]] = {}
    bad = 0
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        for name, get in cases(args.only, args.quick):
            src, calib = get()
            rows = [measure("float", src)]
            rm.log(json.dumps(rows[-1]))
            for label, build in variants():
                dst = Path(tmp) / f"{name}.{label.replace(' ', '_').replace('%', '')}.onnx"
                rm.log(f"{name}: {label}")
                with rm.warnings_quiet():
                    build(src, dst, calib)
                rows.append(measure(label, dst))
                rm.log(json.dumps(rows[-1]))
            result[name] = rows
            print(f"\n{name} ({src.name}): bytes")
            print(f"{'variant':22s} {'ONNX':>12s} {'zstd -19':>12s} {'lzma -9e':>12s} {'.tslim':>12s} "
                  f"{'vs best':>8s} smallest exact")  # fmt: skip
            for r in rows:
                best = min(r["zstd19"], r["lzma9e"])
                print(f"{r['variant']:22s} {r['onnx']:12,d} {r['zstd19']:12,d} {r['lzma9e']:12,d} {r['tslim']:12,d} "
                      f"{r['tslim'] / best:8.4f} {r['smallest']!s:8s} {r['exact']}")  # fmt: skip
                bad += not (r["smallest"] and r["exact"])
            sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(f"\n{bad} row(s) where the .tslim is not the smallest or not bit-exact")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
