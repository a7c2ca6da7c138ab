"""Moved to :mod:`tensorslim.data.images`; kept so existing imports work."""

from tensorslim.data.images import IMAGE_SUFFIXES, ImagePreprocess, image_files, load_images, preprocess_image

__all__ = ["IMAGE_SUFFIXES", "ImagePreprocess", "image_files", "load_images", "preprocess_image"]
