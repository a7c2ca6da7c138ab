"""tensorslim: make trained neural networks smaller and faster for deployment, and prove it.

The public surface::

    import tensorslim as ts

    result = ts.quantize("model.onnx", "model.int8.onnx")            # dynamic-range int8
    report = ts.evaluate("model.onnx", "model.int8.onnx", "test.npz")  # fidelity and accuracy
    bench = ts.benchmark_models(["model.onnx", "model.int8.onnx"])     # size, latency, memory
    stats = ts.inspect_model(ts.load_model("model.onnx"))              # weight statistics
"""

from tensorslim.analysis.inspect import InspectReport, inspect_model
from tensorslim.api import QuantizeResult, quantize
from tensorslim.backends.onnx import find_weights, load_model, save_model
from tensorslim.benchmark import BenchReport, benchmark_models
from tensorslim.errors import InputError, TargetNotMetError, TensorSlimError, UnsupportedModelError
from tensorslim.evaluate import Dataset, EvalReport, evaluate, load_npz
from tensorslim.passes import DynamicQuantConfig, DynamicQuantPass, Pass, PassResult, Pipeline, WeightRecord

__version__ = "0.1.0"

__all__ = [
    "BenchReport",
    "Dataset",
    "DynamicQuantConfig",
    "DynamicQuantPass",
    "EvalReport",
    "InputError",
    "InspectReport",
    "Pass",
    "PassResult",
    "Pipeline",
    "QuantizeResult",
    "TargetNotMetError",
    "TensorSlimError",
    "UnsupportedModelError",
    "WeightRecord",
    "__version__",
    "benchmark_models",
    "evaluate",
    "find_weights",
    "inspect_model",
    "load_model",
    "load_npz",
    "quantize",
    "save_model",
]
