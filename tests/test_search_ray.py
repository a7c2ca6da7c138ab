"""The search on a local Ray instance gives the same Pareto front as the local process pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from models import mlp_model, run
from tensorslim.search import SearchConfig, run_search

ray = pytest.importorskip("ray")


def test_ray_and_pool_give_the_same_front(tmp_path: Path) -> None:
    model, _ = mlp_model(hidden=128)
    onnx.save(model, tmp_path / "m.onnx")
    r = np.random.default_rng(0)
    for name, n in (("calib", 32), ("val", 64)):
        x = r.standard_normal((n, 32)).astype(np.float32)
        np.savez(tmp_path / f"{name}.npz", x=x, label=run(model, {"x": x})[0].argmax(1))
    cfg = {"budget": 6, "workers": 2, "builtins": False, "latency_runs": 3, "fallback_layers": 2, "seed": 3,
           "objective": "size"}  # fmt: skip

    def front(out: str, **kw: object) -> set[tuple[str, float, int]]:
        res = run_search(tmp_path / "m.onnx", tmp_path / out, data=tmp_path / "calib.npz",
                         eval_data=tmp_path / "val.npz", config=SearchConfig(**cfg, **kw), progress=False)  # type: ignore[arg-type]  # fmt: skip
        assert res.trials == 6 and res.evaluated > 0  # separate folders: nothing comes from the other run's cache
        return {(c.recipe_hash, round(c.score or 0, 9), c.size_bytes or 0) for c in res.front}

    pool = front("pool")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = front("ray", ray="auto")
    finally:
        ray.shutdown()
    assert pool and on_ray == pool
