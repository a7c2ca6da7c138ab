"""Moved to :mod:`tensorslim.data`; kept so existing imports work."""

from tensorslim.data import (
    LABEL_KEYS,
    Dataset,
    batch_size_for,
    from_feeds,
    generate_inputs,
    load_data,
    load_npz,
    load_npz_folder,
    random_input,
)

__all__ = [
    "LABEL_KEYS",
    "Dataset",
    "batch_size_for",
    "from_feeds",
    "generate_inputs",
    "load_data",
    "load_npz",
    "load_npz_folder",
    "random_input",
]
