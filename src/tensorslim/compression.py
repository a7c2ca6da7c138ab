"""Moved into the API package: :mod:`tensorslim.api.compression`. This name stays for existing imports."""

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

__all__ = ["CompressReport", "StageReport", "cluster", "compress", "pack", "prune", "prune_channels", "unpack"]
