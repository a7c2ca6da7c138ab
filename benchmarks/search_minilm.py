"""Done-means (b): MiniLM with the cosine metric, budget mean cosine >= 0.99 (``--max-drop 0.01``): the chosen
model's size and latency, and the Pareto plot in the HTML report.

Calibration, selection and test sentences are disjoint slices of the offline sentence pool, padded to 128
tokens; the metric is ``embedding-cosine`` (mean-pooled over the attention mask, what sentence-transformers
returns) by default.

Usage::

    .venv/bin/python benchmarks/search_minilm.py                        # budget 24, 2 workers
    .venv/bin/python benchmarks/search_minilm.py --budget 4 --samples 32   # a short functional run
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realmodels as rm

CACHE = Path(__file__).resolve().parent / ".cache"


def main(argv: list[str] | None = None) -> int:
    """Export MiniLM, build the splits, run the search, write the report."""
    import numpy as np

    from tensorslim.report import write_report
    from tensorslim.search import SearchConfig, run_search

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--samples", type=int, default=128, help="sentences per split")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--metric", default="embedding-cosine", choices=["embedding-cosine", "cosine"])
    ap.add_argument("--objective", default="size", choices=["size", "latency", "both"])
    ap.add_argument("--output-dir", default=str(CACHE / "search-minilm"))
    ap.add_argument("--report", default=str(CACHE / "search-minilm.html"))
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    CACHE.mkdir(exist_ok=True)
    model = rm.export_minilm(CACHE)
    tok = rm.minilm_tokenizer()
    n = args.samples
    splits = {}
    for i, name in enumerate(("calib", "val", "test")):
        feeds = rm.padded_feeds(tok, rm.load_sentences(n, offset=i * n), seq_len=args.seq_len)
        path = CACHE / f"minilm-{name}-{n}-{args.seq_len}.npz"
        np.savez(path, **feeds)
        splits[name] = path
    cfg = SearchConfig(metric=args.metric, max_drop=0.01, objective=args.objective, budget=args.budget,
                       workers=args.workers)  # fmt: skip
    res = run_search(model, args.output_dir, data=splits["calib"], eval_data=splits["val"], test_data=splits["test"],
                     config=cfg)  # fmt: skip
    print(f"float: {res.float_size_bytes / 1e6:.2f} MB, p50 {res.float_latency_ms:.2f} ms (batch 1, 1 thread); "
          f"budget {res.metric} >= {res.threshold:.4f}")  # fmt: skip
    for c in sorted(res.front, key=lambda c: c.size_bytes or 0):
        print(f"  front: {c.name:50s} {(c.size_bytes or 0) / 1e6:7.2f} MB  {c.latency_ms or 0:7.2f} ms  "
              f"{c.score:.5f}  {'meets' if c.feasible else 'misses'}")  # fmt: skip
    if res.chosen is None:
        print("no candidate met the budget")
        return 1
    ch, t = res.chosen, res.test or {}
    print(f"chosen: {ch.name}: {(ch.size_bytes or 0) / 1e6:.2f} MB ({(ch.size_bytes or 0) / res.float_size_bytes:.3f}x), "
          f"p50 {ch.latency_ms:.2f} ms ({(ch.latency_ms or 0) / (res.float_latency_ms or 1):.2f}x), "
          f"{res.metric} {ch.score:.5f} (selection), {t.get('chosen_score', float('nan')):.5f} (test)")  # fmt: skip
    write_report(args.report, search=res, title="tensorslim optimize: MiniLM, embedding cosine >= 0.99")
    print(f"report with the Pareto plot: {args.report}")
    if args.json:
        Path(args.json).write_text(json.dumps(res.to_dict(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
