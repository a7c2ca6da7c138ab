"""Which layers suffer most from quantization: ranked once per search, reused for per-layer fallbacks."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path

from tensorslim._files import write_text_atomic

__all__ = ["rank_sensitive_layers"]

log = logging.getLogger(__name__)


def rank_sensitive_layers(
    model: str | os.PathLike[str],
    *,
    calib: str | os.PathLike[str] | None,
    eval_data: str | os.PathLike[str] | None,
    top: int = 4,
    cache_file: Path | None = None,
    seed: int = 0,
) -> tuple[tuple[str, ...], str]:
    """The ``top`` node names whose quantization adds the most error, worst first, and a note.

    The model is quantized once (static int8 when calibration data is given, else dynamic int8) and compared
    layer by layer with :func:`~tensorslim.diagnostics.layers.diagnose_layers` (ranked by added SQNR). A failure
    gives no ranking and says why (the search then runs without per-layer fallbacks).
    """
    if cache_file is not None and cache_file.is_file():
        try:
            d = json.loads(cache_file.read_text())
            return tuple(d["nodes"]), str(d["note"])
        except (ValueError, KeyError):
            pass
    from tensorslim.diagnostics.layers import diagnose_layers
    from tensorslim.errors import InputError
    from tensorslim.recipe import builtin_recipes
    from tensorslim.recipe.apply import apply_recipe

    name = "static-int8" if calib is not None else "dynamic-int8"
    try:
        with tempfile.TemporaryDirectory(prefix="tensorslim-sens-") as tmp:
            q = Path(tmp) / "q.onnx"
            from tensorslim.recipe import recipe_from_dict
            from tensorslim.search.worker import without_latency_check

            recipe = recipe_from_dict(without_latency_check(builtin_recipes().get(name).to_dict()))
            apply_recipe(recipe, model, q, data=calib, seed=seed, progress=False)
            rep = diagnose_layers(model, q, eval_data or calib, max_samples=32, top=top)
    except InputError as e:
        log.info("no sensitivity ranking: %s", e)
        return (), f"no per-layer sensitivity ranking ({e}); per-layer fallbacks not searched"
    ranked = sorted(
        (lay for lay in rep.layers if lay.node and lay.weight and math.isfinite(lay.added_sqnr_db)),
        key=lambda lay: lay.added_sqnr_db,
    )
    nodes: list[str] = []
    for lay in ranked:
        if lay.node not in nodes:
            nodes.append(lay.node)
        if len(nodes) == top:
            break
    note = f"most sensitive layers under {name} (added SQNR): " + ", ".join(nodes) if nodes else "no layer ranked"
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cache_file, json.dumps({"nodes": nodes, "note": note}))
    return tuple(nodes), note
