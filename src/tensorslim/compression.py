"""Moved into the API package: :mod:`tensorslim.api.compression`. This name stays for existing imports."""

from tensorslim.api.compression import *  # noqa: F403
from tensorslim.api.compression import __all__ as __all__
