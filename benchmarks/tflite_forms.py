"""TFLite dynamic-range forms in LiteRT: is the default (``auto``) ever slower than the float model?

For each ``.tflite`` model (given, or the tiny CNN / MLP / LSTM builders of ``tests/tflite_models.py`` made
larger), writes the ``auto``, ``integer`` (hybrid kernels wherever they exist) and ``weight_only`` outputs and
measures them side by side with :func:`tensorslim.benchmark.litert.benchmark_litert` (interleaved rounds, p50
with a 95 % CI). ``auto`` fails the check when its p50 CI lies wholly above the float model's.

    python benchmarks/tflite_forms.py [MODEL.tflite ...] [--quick] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

FORMS = ("auto", "integer", "weight_only")


def _builtin(tmp: Path) -> list[Path]:
    import tflite_models as tm

    out = []
    for name, data in (
        ("cnn", tm.cnn(size=96, c1=32, c2=64)),
        ("mlp", tm.mlp(in_dim=512, hidden=1024, out=256)),
        ("lstm", tm.lstm(steps=20, features=64, units=128)),
    ):
        p = tmp / f"{name}.tflite"
        p.write_bytes(data)
        out.append(p)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--quick", action="store_true", help="short timing (CI: checks the script runs)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    from tensorslim.backends.tflite.dynamic import TfliteDynamicConfig
    from tensorslim.backends.tflite.quantize import quantize_tflite
    from tensorslim.benchmark.litert import benchmark_litert

    slower = []
    with tempfile.TemporaryDirectory(prefix="tensorslim-tflite-forms-") as d:
        tmp = Path(d)
        models = args.models or _builtin(tmp)
        print("| model | form | size | p50 ms | vs float |\n|---|---|---|---|---|")
        for src in models:
            paths = [src]
            for form in FORMS:
                out = tmp / f"{src.stem}.{form}.tflite"
                quantize_tflite(src, out, config=TfliteDynamicConfig(form=form))
                paths.append(out)
            rep = benchmark_litert(
                paths, threads=args.threads, max_time_s=0.5 if args.quick else 5.0, min_runs=5 if args.quick else 50
            )
            ref = rep.models[0]
            for label, p, m in zip(("float", *FORMS), paths, rep.models, strict=True):
                ratio = m.p50_ms / ref.p50_ms if ref.p50_ms else 1.0
                print(
                    f"| {src.stem} | {label} | {p.stat().st_size / src.stat().st_size:.2f}x | {m.p50_ms:.3f} | {ratio:.2f}x |"
                )
            auto = rep.models[1]
            if auto.p50_ci_low_ms > ref.p50_ci_high_ms:
                slower.append(src.stem)
    if slower:
        print(f"auto slower than float on: {', '.join(slower)}")
    return 1 if slower and not args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
