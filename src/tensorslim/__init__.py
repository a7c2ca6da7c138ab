"""tensorslim: make trained neural networks smaller and faster for deployment, and prove it.

The public surface::

    import tensorslim as ts

    result = ts.quantize("model.onnx", "model.int8.onnx")            # dynamic-range int8
    report = ts.evaluate("model.onnx", "model.int8.onnx", "test.npz")  # fidelity and accuracy
    bench = ts.benchmark_models(["model.onnx", "model.int8.onnx"])     # size, latency, memory
    stats = ts.inspect_model(ts.load_model("model.onnx"))              # weight statistics
    ts.from_torch(module, torch.randn(1, 3, 32, 32), output="model.onnx")  # PyTorch in (torch extra)
"""

from tensorslim.api import QuantizeResult, quantize
from tensorslim.backends.onnx import find_weights, load_model, save_model
from tensorslim.benchmark import BenchReport, benchmark_models
from tensorslim.compression import CompressReport, cluster, compress, pack, prune, prune_channels, unpack
from tensorslim.diagnostics.inspect import InspectReport, inspect_model
from tensorslim.errors import InputError, TargetNotMetError, TensorSlimError, UnsupportedModelError
from tensorslim.evaluate import Dataset, EvalReport, evaluate, load_npz
from tensorslim.frontends import from_torch
from tensorslim.pack import PackConfig, PackReport
from tensorslim.passes import DynamicQuantConfig, DynamicQuantPass, Pass, PassResult, Pipeline, WeightRecord
from tensorslim.passes.channel_prune import ChannelPruneConfig, ChannelPrunePass
from tensorslim.passes.cluster import ClusterConfig, ClusterPass
from tensorslim.passes.prune import PruneConfig, PrunePass

__version__ = "0.1.0"

__all__ = [
    "BenchReport",
    "ChannelPruneConfig",
    "ChannelPrunePass",
    "ClusterConfig",
    "ClusterPass",
    "CompressReport",
    "Dataset",
    "DynamicQuantConfig",
    "DynamicQuantPass",
    "EvalReport",
    "InputError",
    "InspectReport",
    "PackConfig",
    "PackReport",
    "Pass",
    "PassResult",
    "Pipeline",
    "PruneConfig",
    "PrunePass",
    "QuantizeResult",
    "TargetNotMetError",
    "TensorSlimError",
    "UnsupportedModelError",
    "WeightRecord",
    "__version__",
    "benchmark_models",
    "cluster",
    "compress",
    "evaluate",
    "find_weights",
    "from_torch",
    "inspect_model",
    "load_model",
    "load_npz",
    "pack",
    "prune",
    "prune_channels",
    "quantize",
    "save_model",
    "unpack",
]
