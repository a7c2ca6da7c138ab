"""Clustering, pruning and the packed ``.tslim`` artifact on MiniLM (all-MiniLM-L6-v2).

Part 1 (pack): each variant is clustered (or quantized), packed, unpacked and embedded on real sentences;
the table shows the .tslim size against the float ONNX file, bits per weight, mean/min cosine of
mean-pooled embeddings vs float, pack/unpack seconds, and gzip / zstd of the plain float ONNX file.
Part 2 (prune): 2:4 and unstructured 50 % on the MatMul weights, plain magnitude vs activation-aware
(Wanda) vs Wanda + OBS update (sparsegpt), calibrated on sentences disjoint from the evaluation ones.

Usage::

    .venv-bench/bin/python benchmarks/minilm_pack.py            # both parts, 256 evaluation sentences
    .venv-bench/bin/python benchmarks/minilm_pack.py --part pack --sentences 512
    .venv-bench/bin/python benchmarks/minilm_pack.py --json out.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

import realmodels as rm

CACHE = Path(__file__).resolve().parent / ".cache"

# (label, embedding centroids per feature channel, MatMul centroids, MatMul codebook granularity);
# MatMul weights are clustered activation-aware (weighted k-means + error feedback) on calibration sentences.
PACK_VARIANTS: list[tuple[str, int, int, str]] = [
    ("emb16/ch + mm32/tensor", 16, 32, "per_tensor"),
    ("emb12/ch + mm32/tensor", 12, 32, "per_tensor"),
    ("emb10/ch + mm24/tensor", 10, 24, "per_tensor"),
    ("emb8/ch + mm32/tensor", 8, 32, "per_tensor"),
]


def _embed(path: Path, tok: Any, sentences: list[str]) -> np.ndarray:
    return rm.mean_pooled_embeddings(rm.make_session(path, threads=2), tok, sentences)


def _calibration(model: onnx.ModelProto, tok: Any, n: int) -> Any:
    """Token feeds of ``n`` sentences disjoint from the evaluation sentences."""
    from tensorslim.evaluate.data import Dataset

    feeds = rm.padded_feeds(tok, rm.load_sentences(n, offset=1500), seq_len=64)
    names = {i.name for i in model.graph.input}
    return Dataset({k: v for k, v in feeds.items() if k in names}, source="calibration sentences")


def run_pack(
    float_path: Path, tok: Any, sentences: list[str], ref: np.ndarray, out: Path, calib_n: int
) -> list[dict[str, Any]]:
    """Cluster -> pack -> unpack -> embed, per variant."""
    import zstandard

    from tensorslim.pack import pack_model, unpack_model
    from tensorslim.passes.cluster import ClusterConfig, ClusterPass

    float_bytes = float_path.stat().st_size
    raw = float_path.read_bytes()
    rows: list[dict[str, Any]] = [{
        "variant": "float ONNX", "bytes": float_bytes, "ratio": 1.0,
        "gzip_ratio": len(gzip.compress(raw, 6)) / float_bytes,
        "zstd19_ratio": len(zstandard.ZstdCompressor(level=19).compress(raw)) / float_bytes,
    }]  # fmt: skip
    model = onnx.load(str(float_path))
    data = _calibration(model, tok, calib_n)
    for label, emb_k, mm_k, mm_gran in PACK_VARIANTS:
        rm.log(f"pack variant: {label}")
        t0 = time.perf_counter()
        emb = ClusterConfig(clusters=emb_k, granularity="per_channel", codebook_dtype="float16", op_types=("Gather",))
        mm = ClusterConfig(clusters=mm_k, granularity=mm_gran, codebook_dtype="float16", op_types=("MatMul", "Gemm"))
        res = ClusterPass(mm, data)(ClusterPass(emb)(model).model)
        t_cluster = time.perf_counter() - t0
        onnx_path = out / f"minilm.variant{len(rows)}.onnx"
        onnx.save(res.model, str(onnx_path))
        tslim = onnx_path.with_suffix(".tslim")
        t0 = time.perf_counter()
        rep = pack_model(onnx_path, tslim)
        t_pack = time.perf_counter() - t0
        t0 = time.perf_counter()
        unpacked = onnx_path.with_suffix(".unpacked.onnx")
        unpack_model(tslim, unpacked)
        t_unpack = time.perf_counter() - t0
        exact = unpacked.read_bytes() == _canonical(onnx_path)
        cos = rm.cosine_stats(ref, _embed(unpacked, tok, sentences))
        rows.append({
            "variant": label, "bytes": rep.file_bytes, "ratio": rep.file_bytes / float_bytes,
            "bits_per_weight": rep.bits_per_weight, "cos_mean": cos["mean"], "cos_min": cos["min"],
            "cluster_s": t_cluster, "pack_s": t_pack, "unpack_s": t_unpack, "bit_exact": exact,
            "parts": rep.parts, "onnx_ratio": onnx_path.stat().st_size / float_bytes,
        })  # fmt: skip
        rm.log(json.dumps(rows[-1], default=str))
    return rows


def _canonical(path: Path) -> bytes:
    """The model's bytes with every tensor stored as raw data (what unpack writes)."""
    from tensorslim.pack.tensors import iter_tensors

    m = onnx.load(str(path))
    for t in iter_tensors(m):
        if not t.raw_data:
            arr = onnx.numpy_helper.to_array(t)
            t.CopyFrom(onnx.numpy_helper.from_array(arr, t.name))
    return m.SerializeToString()


def run_prune(float_path: Path, tok: Any, sentences: list[str], ref: np.ndarray, calib_n: int) -> list[dict[str, Any]]:
    """2:4 and unstructured 50 % on MatMul weights: magnitude vs wanda vs sparsegpt."""
    from tensorslim.passes.prune import PruneConfig, PrunePass

    model = onnx.load(str(float_path))
    data = _calibration(model, tok, calib_n)
    rows = []
    for pattern in ("2:4", "unstructured"):
        for method in ("magnitude", "wanda", "sparsegpt"):
            rm.log(f"prune {pattern} {method}")
            cfg = PruneConfig(pattern=pattern, sparsity=0.5 if pattern == "unstructured" else None, method=method,
                              op_types=("MatMul", "Gemm"))  # fmt: skip
            t0 = time.perf_counter()
            res = PrunePass(cfg, data)(model)
            dt = time.perf_counter() - t0
            path = CACHE / "minilm_pack" / f"pruned.{pattern.replace(':', 'of')}.{method}.onnx"
            onnx.save(res.model, str(path))
            cos = rm.cosine_stats(ref, _embed(path, tok, sentences))
            pruned = [r for r in res.records if not r.skipped]
            rows.append({"pattern": pattern, "method": method, "cos_mean": cos["mean"], "cos_min": cos["min"],
                         "layers": len(pruned), "seconds": dt})  # fmt: skip
            rm.log(json.dumps(rows[-1]))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the tables."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["pack", "prune", "both"], default="both")
    ap.add_argument("--sentences", type=int, default=256)
    ap.add_argument("--calib", type=int, default=128)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    out = CACHE / "minilm_pack"
    out.mkdir(parents=True, exist_ok=True)
    float_path = rm.export_minilm(CACHE)
    tok = rm.minilm_tokenizer()
    sentences = rm.load_sentences(args.sentences)
    ref = _embed(float_path, tok, sentences)
    result: dict[str, Any] = {"sentences": len(sentences)}
    if args.part in ("pack", "both"):
        result["pack"] = run_pack(float_path, tok, sentences, ref, out, args.calib)
        print(f"\nMiniLM pack ({len(sentences)} sentences, cosine of mean-pooled embeddings vs float)")
        print(f"{'variant':28s} {'MB':>7s} {'x float':>8s} {'bits/w':>7s} {'cos mean':>9s} {'cos min':>8s} "
              f"{'pack s':>7s} {'unpack s':>8s} exact")  # fmt: skip
        for r in result["pack"]:
            if "cos_mean" not in r:
                print(f"{r['variant']:28s} {r['bytes'] / 1e6:7.2f} {1.0:8.3f}   (gzip {r['gzip_ratio']:.3f}x, "
                      f"zstd-19 {r['zstd19_ratio']:.3f}x of the float file)")  # fmt: skip
                continue
            print(
                f"{r['variant']:28s} {r['bytes'] / 1e6:7.2f} {r['ratio']:8.4f} {r['bits_per_weight']:7.3f} "
                f"{r['cos_mean']:9.5f} {r['cos_min']:8.5f} {r['pack_s']:7.2f} {r['unpack_s']:8.2f} {r['bit_exact']}"
            )
    if args.part in ("prune", "both"):
        result["prune"] = run_prune(float_path, tok, sentences, ref, args.calib)
        print(f"\nMiniLM pruning, MatMul weights ({len(sentences)} sentences, {args.calib} calibration sentences)")
        print(f"{'pattern':14s} {'method':10s} {'cos mean':>9s} {'cos min':>8s} {'layers':>6s} {'s':>6s}")
        for r in result["prune"]:
            print(f"{r['pattern']:14s} {r['method']:10s} {r['cos_mean']:9.5f} {r['cos_min']:8.5f} "
                  f"{r['layers']:6d} {r['seconds']:6.1f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
