"""The ``.tslim`` container: a versioned header, a JSON manifest, compressed streams and a SHA-256.

Layout (little endian)::

    magic        8 bytes   b"TSLIM\\x00\\r\\n"   (the CR LF catches text-mode transfers)
    version      u16       format version (this module writes FORMAT_VERSION and reads every version up to it)
    flags        u16       bit 0: the manifest is zstd-compressed (version 2 on); any other bit is refused
    manifest_len u32       bytes of the manifest (UTF-8 JSON, or its zstd frame)
    body_len     u64       bytes of the streams
    sha256       32 bytes  of the 24 header bytes before it + manifest + body (versions 1 and 2: manifest + body)
    manifest, body

The manifest lists the graph stream (the ONNX model with every tensor's data removed) and one entry per
tensor with its encoding and streams (``role``, ``codec``, ``offset``, ``length``, ``size``). Reading checks,
in order: magic, version, lengths against the file size, the checksum (from version 3 it covers the version,
flags and lengths too, so a flipped flag bit is a checksum mismatch), the flags, the manifest, and every declared
size against a bound (``max_expansion`` times the file size), before any stream is decompressed; each
stream decompresses into exactly its declared size, never more.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensorslim._files import atomic_write
from tensorslim.algorithms.entropy import DecodeError, _lzma2_filters, decode
from tensorslim.errors import InputError

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "Container",
    "StreamBody",
    "checksum",
    "peek_manifest",
    "read_container",
    "write_container",
]  # fmt: skip

MAGIC = b"TSLIM\x00\r\n"
#: 2: sub-byte tensors, the bytes encoding, the rans codec, entries name their tensor, zstd manifest;
#: 3: the checksum covers the header fields (version, flags, lengths) too
FORMAT_VERSION = 3
_HEADER = struct.Struct("<8sHHIQ32s")
_COVERED = struct.Struct("<8sHHIQ")  # the header fields before the checksum
_MAX_MANIFEST = 64 << 20
#: the most bytes any file may unpack to, whatever its size (on top of the max_expansion ratio)
MAX_UNPACKED = 16 << 30
_ZSTD_MANIFEST = 1  # header flag


@dataclass
class Container:
    """A parsed container: its manifest and body, checked."""

    path: Path
    version: int
    manifest: dict[str, Any]
    body: bytes
    file_bytes: int
    max_bytes: int

    def stream(self, s: dict[str, Any], expected: int | None = None) -> bytes:
        """Decompress one stream (a manifest dict) after checking its bounds."""
        off, length, size, codec = self._bounds(s, expected)
        try:  # a view of the body: the compressed bytes are not copied
            return decode(codec, memoryview(self.body)[off : off + length], size)
        except DecodeError as e:
            raise InputError(f"{self.path}: {e}; the file is corrupt") from e

    def chunks(self, s: dict[str, Any], expected: int | None = None) -> Iterator[bytes]:
        """The decompressed bytes of one stream, :data:`CHUNK` bytes at a time (``rans``: all at once), with
        the checks of :meth:`stream`: exactly the declared size, never more."""
        off, length, size, codec = self._bounds(s, expected)
        payload = memoryview(self.body)[off : off + length]
        if codec not in ("raw", "zstd", "lzma", "lzma2"):
            yield self.stream(s, expected)
            return
        got = 0
        try:
            for piece in _decode_chunks(codec, payload, size):
                got += len(piece)
                if got > size:
                    raise DecodeError(f"{codec} stream holds more than the {size} bytes declared")
                yield piece
        except DecodeError as e:
            raise InputError(f"{self.path}: {e}; the file is corrupt") from e
        if got != size:
            raise InputError(f"{self.path}: stream decodes to {got} bytes, {size} declared; the file is corrupt")

    def _bounds(self, s: dict[str, Any], expected: int | None) -> tuple[int, int, int, str]:
        try:
            off, length, size, codec = int(s["offset"]), int(s["length"]), int(s["size"]), str(s["codec"])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{self.path}: malformed stream entry in the manifest; the file is corrupt") from e
        if off < 0 or length < 0 or off + length > len(self.body):
            raise InputError(f"{self.path}: a stream lies outside the file; the file is corrupt or truncated")
        if expected is not None and size != expected:
            raise InputError(f"{self.path}: a stream declares {size} bytes where {expected} are needed; corrupt file")
        if size < 0 or size > self.max_bytes:
            raise InputError(
                f"{self.path}: a stream declares {size:,} bytes, far beyond what a {self.file_bytes:,}-byte file "
                "can hold (a decompression bomb or a corrupt file); refusing to unpack it"
            )
        return off, length, size, codec


#: bytes a stream is decompressed at a time by :meth:`Container.chunks`
CHUNK = 8 << 20


def _decode_chunks(codec: str, payload: memoryview, size: int) -> Iterator[bytes]:
    """Decompress ``payload`` a chunk at a time (the caller checks the total against ``size``)."""
    if codec == "raw":
        for i in range(0, len(payload), CHUNK):
            yield bytes(payload[i : i + CHUNK])
        return
    if codec == "zstd":
        import zstandard

        try:
            declared = int(zstandard.get_frame_parameters(payload).content_size)
            if declared != size:
                raise DecodeError(f"zstd frame declares {declared} bytes, {size} expected")
            with zstandard.ZstdDecompressor().stream_reader(payload) as r:
                while piece := r.read(CHUNK):
                    yield piece
        except zstandard.ZstdError as e:
            raise DecodeError(f"zstd stream is corrupt ({e})") from e
        return
    if codec == "lzma2":
        if not payload or not 12 <= payload[0] & 31 <= 26 or payload[0] >> 6:
            raise DecodeError("lzma2 stream has a bad dictionary size")
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_lzma2_filters(payload[0]))
        data: bytes | memoryview = payload[1:]
    else:
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        data = payload
    try:
        while not dec.eof:
            piece = dec.decompress(data, max_length=CHUNK)
            data = b""
            if not piece:
                break  # truncated (it needs input there is not): the caller sees the short total
            yield piece
    except lzma.LZMAError as e:
        raise DecodeError(f"{codec} stream is corrupt ({e})") from e


def checksum(version: int, flags: int, manifest: bytes, body: bytes | memoryview) -> bytes:
    """The SHA-256 stored in the header: from version 3 over the header fields, the manifest and the body;
    before, over the manifest and the body only (the flags were not covered)."""
    h = hashlib.sha256()
    if version >= 3:
        h.update(_COVERED.pack(MAGIC, version, flags, len(manifest), len(body)))
    h.update(manifest)
    h.update(body)
    return h.digest()


class StreamBody:
    """The data section of a ``.tslim`` being written: streams appended in order, with the bytes of each role and
    the streams of each codec (for the report)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.parts: dict[str, int] = {}
        self.codecs: dict[str, int] = {}

    def add(self, role: str, codec: str, raw: int, payload: bytes) -> dict[str, Any]:
        """Append one stream of ``raw`` bytes coded as ``payload``; its manifest entry."""
        s = {"role": role, "codec": codec, "offset": len(self.data), "length": len(payload), "size": raw}
        self.data.extend(payload)
        self.parts[role] = self.parts.get(role, 0) + len(payload)
        self.codecs[codec] = self.codecs.get(codec, 0) + 1
        return s

    def clear(self) -> None:
        """Drop every stream (the model is stored another way)."""
        self.data.clear()
        self.parts.clear()
        self.codecs.clear()


def write_container(path: str | os.PathLike[str], manifest: dict[str, Any], body: bytes) -> int:
    """Write the container atomically (temporary file in the same folder, then rename); return its size."""
    out = Path(path)
    version = FORMAT_VERSION  # read at call time: the tests write older versions by setting it
    mbytes = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    flags = 0
    if version >= 2:
        import zstandard

        packed = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(mbytes)
        if len(packed) < len(mbytes):
            mbytes, flags = packed, _ZSTD_MANIFEST
    digest = checksum(version, flags, mbytes, body)
    header = _HEADER.pack(MAGIC, version, flags, len(mbytes), len(body), digest)
    with atomic_write(out) as f:  # the shared output policy: umask mode, fsync, rename, no leftovers
        f.write(header)
        f.write(mbytes)
        f.write(body)
    return _HEADER.size + len(mbytes) + len(body)


def read_container(path: str | os.PathLike[str], *, max_expansion: float = 4096.0) -> Container:
    """Read and check a container.

    Args:
        path: the ``.tslim`` file.
        max_expansion: no stream, and no sum of streams, may declare more than this many times the file
            size (plus 1 MiB): the guard against decompression bombs.

    Raises:
        InputError: missing file, not a .tslim file, newer format version, truncated, checksum mismatch,
            malformed manifest.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file; check the path")
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(_HEADER.size)
        if len(head) < _HEADER.size or not head.startswith(MAGIC[:5]):
            raise InputError(f"{p}: not a tensorslim pack (.tslim) file, or truncated before its header")
        magic, version, flags, mlen, blen, digest = _HEADER.unpack(head)
        if magic != MAGIC:
            raise InputError(f"{p}: damaged header (line endings converted?); copy the file in binary mode")
        if version > FORMAT_VERSION:
            raise InputError(
                f"{p}: written in .tslim format version {version}, newer than this tensorslim reads "
                f"(up to {FORMAT_VERSION}); upgrade tensorslim"
            )
        if version < 1:
            raise InputError(f"{p}: bad format version {version}; the file is corrupt")
        if mlen > _MAX_MANIFEST or _HEADER.size + mlen + blen != size:
            raise InputError(
                f"{p}: the header declares {_HEADER.size + mlen + blen:,} bytes but the file has {size:,} "
                "(truncated or corrupt); re-create or re-download it"
            )
        mbytes = f.read(mlen)
        body = f.read(blen)
    if checksum(version, flags, mbytes, body) != digest:  # from version 3, a changed flag bit fails here
        raise InputError(f"{p}: checksum mismatch (the file is corrupt or was modified); re-create or re-download it")
    if flags & ~_ZSTD_MANIFEST or (flags and version < 2):  # any other bit is corruption (or a newer format)
        raise InputError(f"{p}: unknown header flags {flags:#06x}; the file is corrupt or from a newer tensorslim")
    if flags & _ZSTD_MANIFEST:
        try:
            mbytes = decode("zstd", mbytes, _zstd_content_size(mbytes))
        except DecodeError as e:
            raise InputError(f"{p}: unreadable manifest ({e}); the file is corrupt") from e
    try:
        manifest = json.loads(mbytes)
        if not isinstance(manifest, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise InputError(f"{p}: unreadable manifest ({e}); the file is corrupt") from e
    max_bytes = min(int(max_expansion * size) + (1 << 20), MAX_UNPACKED)
    declared = 0
    for s in _manifest_streams(p, manifest):
        declared += s["size"]
    if declared > max_bytes:
        raise InputError(
            f"{p}: the manifest declares {declared:,} bytes of content, far beyond what a {size:,}-byte file can "
            f"hold (more than {max_expansion:g}x): a decompression bomb or a corrupt file; refusing to unpack it"
        )
    return Container(p, version, manifest, body, size, max_bytes)


def peek_manifest(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of a ``.tslim`` file read without its body and unchecked (to tell which reader applies), or
    ``None`` when it cannot be read; :func:`read_container` then gives the reason."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEADER.size)
            if len(head) < _HEADER.size:
                return None
            magic, _version, flags, mlen, _blen, _digest = _HEADER.unpack(head)
            if magic != MAGIC or mlen > _MAX_MANIFEST:
                return None
            mbytes = f.read(mlen)
        if flags & _ZSTD_MANIFEST:
            mbytes = decode("zstd", mbytes, _zstd_content_size(mbytes))
        manifest = json.loads(mbytes)
    except (OSError, ValueError, DecodeError, struct.error):
        return None
    return manifest if isinstance(manifest, dict) else None


def _manifest_streams(p: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every stream entry of the manifest, its types checked (a malformed manifest is an InputError)."""

    def bad(what: str) -> InputError:
        return InputError(f"{p}: malformed manifest ({what}); the file is corrupt")

    graph, tensors = manifest.get("graph"), manifest.get("tensors")
    if not isinstance(graph, dict):
        raise bad("no graph stream")
    if not isinstance(tensors, list) or not all(isinstance(t, dict) for t in tensors):
        raise bad("tensors is not a list of objects")
    streams = [graph]
    for t in tensors:
        st = t.get("streams", [])
        if not isinstance(st, list):
            raise bad("streams is not a list")
        streams.extend(st)
    for s in streams:
        if not isinstance(s, dict):
            raise bad("a stream is not an object")
        for key in ("offset", "length", "size"):
            v = s.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise bad(f"stream {key} is {v!r}, not a non-negative integer")
        if not isinstance(s.get("codec"), str):
            raise bad("stream codec is not a string")
    return streams


def _zstd_content_size(data: bytes) -> int:
    """The declared size of a compressed manifest, refused beyond the manifest bound."""
    import zstandard

    try:
        size = int(zstandard.get_frame_parameters(data).content_size)
    except zstandard.ZstdError as e:
        raise DecodeError(f"zstd stream is corrupt ({e})") from e
    if not 0 <= size <= _MAX_MANIFEST:
        raise DecodeError(f"the manifest declares {size} bytes")
    return size


def baselines(data: bytes) -> dict[str, int]:
    """Sizes of ``data`` under the general-purpose compressors a ``.tslim`` is compared with (``--compare``)."""
    import gzip

    import zstandard

    from tensorslim.algorithms.entropy import LZMA_PRESET

    return {
        "zstd-19": len(zstandard.ZstdCompressor(level=19).compress(data)),
        "lzma-9e": len(lzma.compress(data, preset=LZMA_PRESET)),
        "gzip-9": len(gzip.compress(data, compresslevel=9, mtime=0)),
    }
