"""Content-hash cache of evaluated candidates: a candidate seen before is never evaluated again.

The key is the SHA-256 of everything the measurement depends on: the model's bytes, the recipe's passes
(:func:`~tensorslim.recipe.recipe_hash` of the passes only: names and descriptions do not matter), the
calibration and evaluation data, the metric, the seed and the latency settings. Each entry is one small JSON
file ``<folder>/<key>.json`` written atomically, so an interrupted search loses at most the candidates in flight.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensorslim._files import write_text_atomic
from tensorslim.recipe import Recipe, recipe_hash

__all__ = ["ResultCache", "candidate_key", "file_sha256", "passes_hash"]


def _update(h: Any, path: Path) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def file_sha256(path: str | os.PathLike[str] | None) -> str:
    """SHA-256 (hex) of a file's bytes, ``"-"`` for ``None``. A folder (of ``.npz`` feeds or of images) hashes the
    names and bytes of its regular files, in name order (the files the data loaders read)."""
    if path is None:
        return "-"
    h = hashlib.sha256()
    p = Path(path)
    if not p.is_dir():
        _update(h, p)
        return h.hexdigest()
    for member in sorted(q for q in p.iterdir() if q.is_file()):
        h.update(f"{member.name}\n{member.stat().st_size}\n".encode())
        _update(h, member)
    return h.hexdigest()


def passes_hash(recipe: Recipe) -> str:
    """:func:`recipe_hash` of ``recipe`` with a fixed name and description: two recipes that run the same passes
    with the same configs and rules share it."""
    return recipe_hash(Recipe(recipe.version, "candidate", "", recipe.passes))


def candidate_key(context_key: str, recipe: Recipe) -> str:
    """The cache key of ``recipe`` evaluated in the setting ``context_key`` (see :class:`ResultCache`)."""
    return hashlib.sha256(f"{context_key}\n{passes_hash(recipe)}".encode()).hexdigest()


@dataclass
class ResultCache:
    """Evaluated candidates stored as ``<folder>/<key>.json``.

    Attributes:
        folder: Where the entries live (created on the first write).
    """

    folder: Path

    @staticmethod
    def context_key(**parts: Any) -> str:
        """SHA-256 of the measurement setting (model and data hashes, metric, seed, latency settings)."""
        text = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored entry for ``key``, or ``None`` (a corrupt entry counts as missing)."""
        p = self.folder / f"{key}.json"
        try:
            value = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store ``value`` under ``key`` atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.folder / f"{key}.json", json.dumps(value, sort_keys=True, default=str))

    def __len__(self) -> int:
        return len(list(self.folder.glob("*.json"))) if self.folder.is_dir() else 0
