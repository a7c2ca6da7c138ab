"""The Python API behind the CLI, in one package: one call per job, a model in gives the same kind of model out.

:mod:`~tensorslim.api.core` quantizes (any format, :mod:`tensorslim.formats`), :mod:`~tensorslim.api.compression`
prunes, clusters and packs, and both write through the one output check of :mod:`~tensorslim.api.verify`.
``import tensorslim as ts`` re-exports the public names.
"""

from tensorslim.api.compression import (
    CompressReport,
    StageReport,
    cluster,
    compress,
    pack,
    prune,
    prune_channels,
    unpack,
)
from tensorslim.api.core import (
    CalibrationData,
    QuantConfig,
    QuantizeResult,
    as_model,
    load_calibration,
    quantize,
)
from tensorslim.api.verify import verify_output, write_output

__all__ = [
    "CalibrationData",
    "CompressReport",
    "QuantConfig",
    "QuantizeResult",
    "StageReport",
    "as_model",
    "cluster",
    "compress",
    "load_calibration",
    "pack",
    "prune",
    "prune_channels",
    "quantize",
    "unpack",
    "verify_output",
    "write_output",
]
