"""Accuracy-aware automated optimization: an Optuna search over recipes under an accuracy budget.

Typical use::

    from tensorslim.search import SearchConfig, run_search

    res = run_search("model.onnx", "out/", data="calib.npz", eval_data="val.npz", test_data="test.npz",
                     config=SearchConfig(metric="top1", max_drop=0.01, objective="size", budget=40, workers=2))
    res.chosen, res.front, res.chosen_path
"""

from tensorslim.search.cache import ResultCache, candidate_key, passes_hash
from tensorslim.search.space import SearchSpace, recipe_from_params
from tensorslim.search.study import Candidate, SearchConfig, SearchResult, pareto_indices, run_search, write_summary

__all__ = [
    "Candidate",
    "ResultCache",
    "SearchConfig",
    "SearchResult",
    "SearchSpace",
    "candidate_key",
    "pareto_indices",
    "passes_hash",
    "recipe_from_params",
    "run_search",
    "write_summary",
]
