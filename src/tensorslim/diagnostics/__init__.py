"""Diagnostics: ``inspect`` (what is in this model?), ``doctor`` (will this model be fast here?) and ``layers``
(which layers lost the accuracy?)."""
