"""Transformations as passes: a frozen, validated config in; a model and inspectable records out."""

from tensorslim.passes.base import Pass, PassResult, Pipeline, WeightRecord
from tensorslim.passes.dynamic_quant import DynamicQuantConfig, DynamicQuantPass, QuantForm

__all__ = [
    "DynamicQuantConfig",
    "DynamicQuantPass",
    "Pass",
    "PassResult",
    "Pipeline",
    "QuantForm",
    "WeightRecord",
]
