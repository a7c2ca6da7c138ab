"""Evaluation and calibration data: one contract for every command and the Python API.

:func:`load_data` takes every form (an ``.npz``/``.npy``, a folder of ``.npz``, a folder of images, feed
dicts, a :class:`Dataset`) and checks it against the model's inputs; :mod:`tensorslim.data.layout` reads each
array by its rank against the model's declared shape (samples along the batch axis, a stack of per-sample
feeds, ``[N]`` for a scalar input, one sample), finding each input's batch axis from the shapes.
:class:`Dataset` stores samples along axis 0 and feeds the model in its own layout. This package sits below
the passes and the evaluation: it imports neither.
"""

from tensorslim.data.dataset import Dataset
from tensorslim.data.generate import batch_size_for, generate_inputs, generate_runnable, random_input
from tensorslim.data.images import IMAGE_SUFFIXES, ImagePreprocess, image_files, load_images, preprocess_image
from tensorslim.data.layout import InputLayout, layouts, output_batch_axes, parse_batch_axes
from tensorslim.data.load import (
    LABEL_KEYS,
    BatchAxes,
    from_feeds,
    load_data,
    load_npz,
    load_npz_folder,
    resolve_layouts,
    using_batch_axes,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "LABEL_KEYS",
    "BatchAxes",
    "Dataset",
    "ImagePreprocess",
    "InputLayout",
    "batch_size_for",
    "from_feeds",
    "generate_inputs",
    "generate_runnable",
    "image_files",
    "layouts",
    "load_data",
    "load_images",
    "load_npz",
    "load_npz_folder",
    "output_batch_axes",
    "parse_batch_axes",
    "preprocess_image",
    "random_input",
    "resolve_layouts",
    "using_batch_axes",
]
