"""Test configuration: hypothesis runs derandomized under CI (same examples every run), randomized locally."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")
