"""Compare optimized models with their float original: fidelity and task accuracy."""

from tensorslim.data import Dataset, generate_inputs, load_npz
from tensorslim.evaluate.compare import EvalReport, OutputFidelity, evaluate, run_dataset

__all__ = [
    "Dataset",
    "EvalReport",
    "OutputFidelity",
    "evaluate",
    "generate_inputs",
    "load_npz",
    "run_dataset",
]
