"""Reading ``.npz`` and ``.npy`` files defensively: lazily, with every header checked before allocating.

An ``.npz`` is a zip of ``.npy`` members. :class:`ArrayFile` lists the member names from the zip directory and
reads a member only when asked, so an unused array (a 3 GiB one, say) is never decompressed. Before a member
is read, its ``.npy`` header (dtype, shape) is checked against the member's real size: a header that claims
more bytes than the file holds is refused before any memory is allocated. Object arrays (pickles) are refused
without being unpickled. A ``.npy`` file reads as one array, under the name ``""``.
"""

from __future__ import annotations

import io
import lzma
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from tensorslim.errors import InputError

__all__ = ["SAVE_HINT", "ArrayFile"]

#: How to write a data file the loader takes, for error messages.
SAVE_HINT = "save the data with numpy.savez(path, **{input_name: array})"

#: what reading a damaged zip or .npy can raise, besides InputError: a bad directory or local header
#: (BadZipFile, struct.error), an unsupported "zip file version" or compression method (NotImplementedError),
#: an encrypted member (RuntimeError), corrupt deflate/LZMA data (zlib.error, LZMAError; bzip2 gives OSError),
#: a short read (EOFError), a bad header literal (ValueError, SyntaxError, UnicodeDecodeError), huge numbers
_UNREADABLE: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile, zipfile.LargeZipFile, struct.error, NotImplementedError, RuntimeError, zlib.error,
    lzma.LZMAError, OSError, EOFError, ValueError, SyntaxError, OverflowError, RecursionError,
)  # fmt: skip

# deflate never expands more than ~1032x; a member claiming more is corrupt (a zip bomb)
_MAX_DEFLATE_RATIO = 1100


def _reason(e: BaseException) -> str:
    """A short, one-line reason for a zip/.npy read error."""
    text = " ".join(str(e).split())[:160]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _header(stream: IO[bytes], where: str) -> tuple[np.dtype, tuple[int, ...], bool]:
    """The dtype, shape and Fortran order of the ``.npy`` stream, which is left at the start of the data."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except _UNREADABLE as e:
        raise InputError(f"{where}: not a readable .npy array ({_reason(e)}); {SAVE_HINT}") from e
    return np.dtype(dtype), tuple(int(d) for d in shape), bool(fortran)


def _check_header(where: str, dtype: np.dtype, shape: tuple[int, ...], available: int) -> int:
    """The byte count the header declares, checked against the ``available`` bytes of the member."""
    if dtype.hasobject:
        raise InputError(
            f"{where}: holds Python objects (a pickled {dtype} array), which are never loaded; "
            "save plain numeric arrays (numpy.savez with numbers, not lists or strings of objects)"
        )
    if any(d < 0 for d in shape):
        raise InputError(f"{where}: the array header declares a negative dimension {list(shape)}; the file is corrupt")
    count = 1
    for d in shape:
        count *= d
    need = count * dtype.itemsize
    if need > available:
        raise InputError(
            f"{where}: the array header declares shape {list(shape)} ({need:,} bytes) but the file holds "
            f"{available:,}; the file is truncated or corrupt, write it again"
        )
    return count


def _free_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def _read_data(stream: IO[bytes], where: str, dtype: np.dtype, shape: tuple[int, ...], fortran: bool) -> np.ndarray:
    count = 1
    for d in shape:
        count *= d
    nbytes = count * dtype.itemsize
    buf = bytearray(nbytes)
    view = memoryview(buf)
    got = 0
    while got < nbytes:
        n = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            raise InputError(f"{where}: the file ends after {got:,} of {nbytes:,} data bytes; write it again")
        got += n
    arr = np.frombuffer(buf, dtype=dtype, count=count)
    return arr.reshape(shape[::-1]).transpose() if fortran else arr.reshape(shape)


class ArrayFile:
    """The arrays of an ``.npz`` (or the one array of an ``.npy``), read one at a time on demand.

    Raises (on open):
        InputError: no such file, or not a readable ``.npz``/``.npy``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such data file; check the path")
        self.size = self.path.stat().st_size
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, zipfile.ZipInfo] = {}
        with self.path.open("rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":
            self.names: list[str] = [""]
            return
        try:
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
        except _UNREADABLE as e:
            raise InputError(f"{self.path}: not a readable .npz or .npy file ({_reason(e)}); {SAVE_HINT}") from e
        for info in infos:
            if info.filename.endswith(".npy") and not info.is_dir():
                self._members[info.filename[: -len(".npy")]] = info
        self.names = list(self._members)

    @property
    def is_npy(self) -> bool:
        """Whether the file is a single ``.npy`` array (named ``""``)."""
        return self._zip is None

    def close(self) -> None:
        """Close the underlying zip file."""
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> ArrayFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def header(self, name: str) -> tuple[tuple[int, ...], np.dtype, bool]:
        """The declared shape, dtype and Fortran order of array ``name`` (its header only, checked)."""
        with self._open(name) as (stream, where, available):
            dtype, shape, fortran = _header(stream, where)
            _check_header(where, dtype, shape, available - stream.tell())
            return shape, dtype, fortran

    def read(self, name: str, rows: int | None = None) -> np.ndarray:
        """Array ``name`` (only its first ``rows`` along axis 0 when given and the array is C-ordered), its
        header checked against the real size, and the bytes to read against free memory, before allocating.

        Raises:
            InputError: a corrupt or truncated array, a header claiming more than the file holds, a pickle,
                an array larger than free memory.
        """
        with self._open(name) as (stream, where, available):
            dtype, shape, fortran = _header(stream, where)
            _check_header(where, dtype, shape, available - stream.tell())
            if rows is not None and shape and not fortran and 0 <= rows < shape[0]:
                shape = (rows, *shape[1:])
            need = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
            free = _free_memory()
            if need > free:
                raise InputError(
                    f"{where}: the array {list(shape)} needs {need / 2**30:.1f} GiB, more than the "
                    f"{free / 2**30:.1f} GiB of free memory; give fewer samples (--max-samples) or a smaller file"
                )
            try:
                return _read_data(stream, where, dtype, shape, fortran)
            except _UNREADABLE as e:
                if isinstance(e, InputError):
                    raise
                raise InputError(f"{where}: the array data is corrupt ({_reason(e)}); write the file again") from e

    def _open(self, name: str) -> _Member:
        where = str(self.path) if self.is_npy else f"{self.path}: array {name!r}"
        if self._zip is None:
            return _Member(self.path.open("rb"), where, self.size)
        info = self._members[name]
        if (
            info.compress_type != zipfile.ZIP_STORED
            and info.file_size > max(1 << 16, info.compress_size) * _MAX_DEFLATE_RATIO
        ):
            raise InputError(
                f"{where}: declares {info.file_size:,} bytes from {info.compress_size:,} compressed, more than "
                "compression can give; the file is corrupt"
            )
        if info.header_offset + info.compress_size > self.size:
            raise InputError(f"{where}: the member runs past the end of the file; the file is truncated")
        try:
            return _Member(self._zip.open(info), where, info.file_size)
        except _UNREADABLE as e:
            raise InputError(f"{where}: not readable ({_reason(e)}); {SAVE_HINT}") from e


class _Member:
    """A context manager yielding ``(stream, where, size in bytes)``."""

    def __init__(self, stream: IO[bytes] | io.BufferedReader, where: str, size: int) -> None:
        self.stream, self.where, self.size = stream, where, size

    def __enter__(self) -> tuple[IO[bytes], str, int]:
        return self.stream, self.where, self.size

    def __exit__(self, *exc: object) -> None:
        self.stream.close()
