"""Done-means (a): on the bundled digits CNN with ``--max-drop 1%``, the search's model is smaller than every
built-in recipe that meets the budget, and its accuracy drop on the held-out test split is within the budget.

Selection uses ``digits_val.npz`` (training images outside the calibration set), the final check
``digits_test.npz``. Prints each built-in recipe's size and selection accuracy, the chosen model, its test
accuracy, and whether both claims hold (exit code 1 when one does not).

Usage::

    .venv/bin/python benchmarks/search_digits.py                 # budget 40, 2 workers
    .venv/bin/python benchmarks/search_digits.py --budget 8       # a short functional run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run the search on the bundled example and check the claim."""
    from tensorslim.examples import (
        example_calib_data_path,
        example_model_path,
        example_test_data_path,
        example_val_data_path,
    )
    from tensorslim.search import SearchConfig, run_search

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output-dir", help="keep the study, cache and best model here (default: a temporary folder)")
    ap.add_argument("--json", help="write the search result here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="search-digits-") as tmp:
        out = Path(args.output_dir or tmp)
        cfg = SearchConfig(metric="top1", max_drop=0.01, objective="size", budget=args.budget, workers=args.workers,
                           seed=args.seed)  # fmt: skip
        res = run_search(example_model_path(), out, data=example_calib_data_path(), eval_data=example_val_data_path(),
                         test_data=example_test_data_path(), config=cfg)  # fmt: skip
        print(f"float: {res.float_size_bytes / 1e6:.3f} MB, selection top-1 {res.reference_score:.4f}; "
              f"budget top-1 >= {res.threshold:.4f}")  # fmt: skip
        print(f"{'built-in recipe':28s} {'size MB':>8s} {'top-1':>7s}  meets budget")
        for c in res.candidates:
            if c.source == "builtin":
                size = "-" if c.size_bytes is None else f"{c.size_bytes / 1e6:.3f}"
                score = "-" if c.score is None else f"{c.score:.4f}"
                print(f"{c.name:28s} {size:>8s} {score:>7s}  {'yes' if c.feasible else 'no'} {c.error[:60]}")
        if res.chosen is None:
            print("no candidate met the budget")
            return 1
        ch = res.chosen
        print(f"chosen: {ch.name} ({'built-in' if ch.trial is None else f'trial {ch.trial}'}), "
              f"{(ch.size_bytes or 0) / 1e6:.3f} MB, selection top-1 {ch.score:.4f}")  # fmt: skip
        t = res.test or {}
        print(f"held-out test: float {t.get('float_score', float('nan')):.4f} -> chosen "
              f"{t.get('chosen_score', float('nan')):.4f} (drop {100 * t.get('drop', float('nan')):.2f} points)")  # fmt: skip
        smaller = bool(res.beats_builtins())
        within = bool(t.get("within_budget"))
        print(f"smaller than every built-in recipe that meets the budget: {'yes' if smaller else 'NO'}")
        print(f"test drop within the budget: {'yes' if within else 'NO'}")
        print(f"{res.trials} trials, {res.evaluated} evaluated, {res.cache_hits} cache hits")
        if args.json:
            Path(args.json).write_text(json.dumps(res.to_dict(), indent=2, default=str))
    return 0 if smaller and within else 1


if __name__ == "__main__":
    sys.exit(main())
