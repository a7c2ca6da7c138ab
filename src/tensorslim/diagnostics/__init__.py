"""Diagnostics: ``doctor`` (will this model be fast here?) and ``layers`` (which layers lost the accuracy?)."""
