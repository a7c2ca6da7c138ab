"""tensorslim: make trained neural networks smaller and faster for deployment, and prove it.

The public surface::

    import tensorslim as ts

    result = ts.quantize("model.onnx", "model.int8.onnx")            # dynamic-range int8
    report = ts.evaluate("model.onnx", "model.int8.onnx", "test.npz")  # fidelity and accuracy
    bench = ts.benchmark_models(["model.onnx", "model.int8.onnx"])     # size, latency, memory
    stats = ts.inspect_model(ts.load_model("model.onnx"))              # weight statistics
    ts.from_torch(module, torch.randn(1, 3, 32, 32), output="model.onnx")  # PyTorch in (torch extra)
    ts.apply_recipe(ts.builtin_recipes().get("static-int8"), "model.onnx", "q.onnx", data="calib.npz")
    ts.run_pipeline(ts.load_model("model.onnx"), ts.Float16Config())  # a mode's pipeline, in memory
"""

from tensorslim.api import (
    CompressReport,
    QuantizeResult,
    cluster,
    compress,
    pack,
    prune,
    prune_channels,
    quantize,
    unpack,
)
from tensorslim.backends.onnx import find_weights, load_model, save_model
from tensorslim.benchmark import BenchReport, benchmark_models
from tensorslim.diagnostics.inspect import InspectReport, inspect_model
from tensorslim.errors import InputError, TargetNotMetError, TensorSlimError, UnsupportedModelError
from tensorslim.evaluate import Dataset, EvalReport, evaluate, load_npz
from tensorslim.frontends import from_torch
from tensorslim.pack import PackConfig, PackReport
from tensorslim.passes import DynamicQuantConfig, DynamicQuantPass, Pass, PassResult, Pipeline, WeightRecord
from tensorslim.passes.blockwise_quant import BlockQuantConfig
from tensorslim.passes.channel_prune import ChannelPruneConfig, ChannelPrunePass
from tensorslim.passes.cluster import ClusterConfig, ClusterPass
from tensorslim.passes.float16 import Float16Config
from tensorslim.passes.prune import PruneConfig, PrunePass
from tensorslim.passes.static_quant import StaticQuantConfig
from tensorslim.pipeline import mode_pipeline, run_pipeline
from tensorslim.recipe import Recipe, RecipeError, RecipeResult, apply_recipe, builtin_recipes, load_recipe

__version__ = "0.1.0"

__all__ = [
    "BenchReport",
    "BlockQuantConfig",
    "ChannelPruneConfig",
    "ChannelPrunePass",
    "ClusterConfig",
    "ClusterPass",
    "CompressReport",
    "Dataset",
    "DynamicQuantConfig",
    "DynamicQuantPass",
    "EvalReport",
    "Float16Config",
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
    "Recipe",
    "RecipeError",
    "RecipeResult",
    "StaticQuantConfig",
    "TargetNotMetError",
    "TensorSlimError",
    "UnsupportedModelError",
    "WeightRecord",
    "__version__",
    "apply_recipe",
    "benchmark_models",
    "builtin_recipes",
    "cluster",
    "compress",
    "evaluate",
    "find_weights",
    "from_torch",
    "inspect_model",
    "load_model",
    "load_npz",
    "load_recipe",
    "mode_pipeline",
    "pack",
    "prune",
    "prune_channels",
    "quantize",
    "run_pipeline",
    "save_model",
    "unpack",
]
