"""Done-means (c): the same 16-candidate search with 1 worker, then 2 workers, in one run; prints both times.

Both runs use the bundled digits CNN, the same seed and budget, the seeded random sampler (so both try exactly
the same candidates whatever the batching), separate output folders (no shared cache) and no built-in recipes; the ratio is ``time(2 workers) / time(1 worker)``
(the claim: <= 0.65).

Usage::

    .venv/bin/python benchmarks/search_workers.py            # 16 candidates each
    .venv/bin/python benchmarks/search_workers.py --quick    # 4 candidates on a tiny model, a few seconds (CI)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def _tiny(folder: Path) -> tuple[Path, Path, Path]:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    r = np.random.default_rng(0)
    w1, w2 = (
        (r.standard_normal((128, 32)) * 0.2).astype(np.float32),
        (r.standard_normal((10, 128)) * 0.2).astype(np.float32),
    )
    nodes = [helper.make_node("Gemm", ["x", "W1"], ["h"], transB=1, name="fc1"), helper.make_node("Relu", ["h"], ["a"]),
             helper.make_node("Gemm", ["a", "W2"], ["y"], transB=1, name="fc2")]  # fmt: skip
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 10])],
                          [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")])  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, folder / "m.onnx")
    import onnxruntime as ort

    sess = ort.InferenceSession(str(folder / "m.onnx"), providers=["CPUExecutionProvider"])
    for name, n in (("calib", 32), ("val", 64)):
        x = r.standard_normal((n, 32)).astype(np.float32)
        np.savez(folder / f"{name}.npz", x=x, label=sess.run(None, {"x": x})[0].argmax(1))
    return folder / "m.onnx", folder / "calib.npz", folder / "val.npz"


def main(argv: list[str] | None = None) -> int:
    """Run the search twice and print the times."""
    from tensorslim.examples import example_calib_data_path, example_model_path, example_val_data_path
    from tensorslim.search import SearchConfig, run_search

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 candidates on a tiny model (CI)")
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="search-workers-") as tmp:
        folder = Path(tmp)
        if args.quick:
            model, calib, val = _tiny(folder)
            budget = 4
        else:
            model, calib, val = example_model_path(), example_calib_data_path(), example_val_data_path()
            budget = args.budget
        times: dict[int, float] = {}
        evaluated: dict[int, int] = {}
        for workers in (1, 2):
            cfg = SearchConfig(
                budget=budget, workers=workers, builtins=False, seed=0, fallback_layers=0, sampler="random"
            )
            t0 = time.perf_counter()
            res = run_search(model, folder / f"w{workers}", data=calib, eval_data=val, config=cfg, progress=False)
            times[workers] = time.perf_counter() - t0
            evaluated[workers] = res.evaluated
            print(f"{workers} worker(s): {times[workers]:.1f} s for {res.trials} trials ({res.evaluated} evaluated)")
        ratio = times[2] / times[1]
        print(f"ratio 2 workers / 1 worker: {ratio:.2f} (claim: <= 0.65; only meaningful on >= 2 idle cores)")
        if args.json:
            Path(args.json).write_text(json.dumps({"seconds": times, "evaluated": evaluated, "ratio": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
