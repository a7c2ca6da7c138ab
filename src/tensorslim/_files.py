"""The output policy: every file tensorslim writes goes through here.

* :func:`check_output_path` refuses, before any work, an output that is (by path, symlink or hard link) one of
  the command's inputs or another of its outputs, that exists and is not a regular file (a folder, a FIFO, a
  device), or whose folder is missing or not writable.
* :func:`atomic_write` writes to a temporary file in the target folder, fsyncs it, lets the caller verify it
  (a model that fails verification leaves nothing at the target), then renames it into place. The file mode
  follows the umask like any new file. Temporaries are removed on every exit path: exceptions, ``SIGTERM``
  and ``SIGINT`` (see :func:`command_scope`) and interpreter exit.
* :func:`command_scope` (used by the CLI's ``run_command``) declares a command's inputs and outputs, checks
  them all up front, and makes every later write in the command check against them again.

Before -> after, for ``quantize in.onnx -o q.onnx --json in.onnx``: exit 0 with ``in.onnx`` replaced by JSON
-> exit 2 "the output path is an input of this command", nothing written.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import signal
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

from tensorslim.errors import InputError

__all__ = [
    "atomic_write",
    "check_output_path",
    "command_scope",
    "publish",
    "write_bytes_atomic",
    "write_text_atomic",
]

PathLike = str | os.PathLike[str]
_LIVE: set[str] = set()  # temporaries being written, removed on any exit
_LOCK = threading.Lock()


@dataclass
class _Scope:
    inputs: list[Path] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)


_SCOPE: list[_Scope] = []


def _ident(p: Path) -> tuple[int, int] | None:
    try:
        st = p.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _same(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):  # symlink loops
        return False
    ia, ib = _ident(a), _ident(b)
    return ia is not None and ia == ib


def _external_data_files(p: Path) -> list[Path]:
    """An input model's external data files count as inputs too (``<name>.data`` and ``<name>_data``)."""
    return [q for q in (p.with_name(p.name + ".data"), p.with_name(p.stem + ".data")) if q.is_file()]


def _kind(mode: int) -> str:
    """What a file that is not a regular file or a folder is, for messages."""
    kinds = [
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((k for test, k in kinds if test(mode)), "not a regular file")


def _check_kind(out: Path) -> None:
    try:
        st = out.stat()
    except FileNotFoundError:
        return
    except OSError as e:
        raise InputError(f"{out}: cannot be checked ({e.strerror}); choose another output path") from e
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{out}: is a folder; give a file name for the output, e.g. {out / 'model.onnx'}")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(
            f"{out}: is {_kind(st.st_mode)}, not a regular file; tensorslim only replaces regular files, choose a file"
        )


def check_input_kind(path: PathLike) -> None:
    """Refuse an input that exists and is neither a regular file nor a folder (a FIFO, a device, a socket):
    reading one could block forever or never end. A missing path is left to the reader's own message.

    Raises:
        InputError: ``path`` is a FIFO, a device or a socket.
    """
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return
    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
        return
    raise InputError(
        f"{path}: is {_kind(st.st_mode)}, not a regular file; save the model or data to a file and pass that"
    )


def check_output_path(
    output: PathLike, *inputs: PathLike, others: Iterable[PathLike] = (), folder: bool = True
) -> Path:
    """Validate an output path before any work is done.

    Args:
        output: the path to be written.
        inputs: files the command reads (never overwritten); the current command's declared inputs are added.
        others: the command's other outputs (two outputs may not be one file).
        folder: also check that the folder exists and is writable (the command may create it later).

    Raises:
        InputError: the output is an input or another output (by path, symlink or hard link), exists and is
            not a regular file, or its folder is missing or not writable.
    """
    out = Path(output)
    scope = _SCOPE[-1] if _SCOPE else None
    all_inputs = [Path(i) for i in inputs] + (scope.inputs if scope else [])
    for ip in all_inputs:
        for q in [ip, *_external_data_files(ip)]:
            if _same(out, q):
                raise InputError(
                    f"{out}: the output path is the input {q} of this command; choose a different output path "
                    "(tensorslim never overwrites its input)"
                )
    for other in others:
        if _same(out, Path(other)):
            raise InputError(f"{out}: two outputs of this command name the same file; give each its own path")
    _check_kind(out)
    parent = out.parent if str(out.parent) else Path(".")
    if not folder:
        return out
    if not parent.is_dir():
        raise InputError(f"{out}: the folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{out}: the folder {parent} is not writable; choose another output folder")
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def _remove_stale(out: Path, parent: Path) -> None:
    """Temporaries of ``out`` left by a writer killed with SIGKILL (no handler runs): removed by the next one."""
    with contextlib.suppress(OSError):
        for q in parent.glob(f".{glob_escape(out.name)}.*.tmp"):
            parts = q.name[len(out.name) + 2 : -len(".tmp")].split(".")
            if len(parts) == 2 and parts[0].isdigit() and not _pid_alive(int(parts[0])):
                with contextlib.suppress(OSError):
                    q.unlink()


def _new_temp(out: Path) -> tuple[int, str]:
    parent = out.parent if str(out.parent) else Path(".")
    _remove_stale(out, parent)
    for _ in range(100):
        tmp = str(parent / f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            with _LOCK:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
                _LIVE.add(tmp)
            return fd, tmp
        except FileExistsError:
            continue
        except OSError as e:
            raise InputError(f"{out}: cannot write to the folder {parent} ({e.strerror}); choose another output") from e
    raise InputError(f"{out}: cannot create a temporary file in {parent}; choose another output")  # pragma: no cover


def _drop(tmp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    with _LOCK:
        _LIVE.discard(tmp)


@contextlib.contextmanager
def atomic_write(
    path: PathLike, *, inputs: Iterable[PathLike] = (), verify: Callable[[Path], None] | None = None
) -> Iterator[Any]:
    """Yield a binary file object; on success the data is fsynced, verified and renamed to ``path``.

    On any exception (including a failed ``verify``, which gets the temporary path) the temporary is removed
    and ``path`` is untouched.
    """
    out = check_output_path(path, *inputs)
    fd, tmp = _new_temp(out)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if verify is not None:
            verify(Path(tmp))
        _replace(tmp, out)
    except OSError as e:
        raise InputError(f"{out}: writing failed ({e.strerror or e}); check free space and permissions") from e
    finally:
        _drop(tmp)
    _sync_folder(out)


def _replace(tmp: PathLike, out: Path) -> None:
    _check_kind(out)  # a FIFO or folder created meanwhile is not replaced either
    os.replace(tmp, out)


def _sync_folder(out: Path) -> None:
    with contextlib.suppress(OSError):  # the rename is durable once the folder is synced
        dfd = os.open(out.parent if str(out.parent) else ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def publish(written: PathLike, path: PathLike) -> Path:
    """Move a file a library wrote in a temporary place in ``path``'s folder (ONNX's external-data saver
    writes a model and its data file itself) to ``path`` the way :func:`atomic_write` does: fsync, the mode
    the umask gives a new file, rename, folder fsync.

    Raises:
        InputError: ``path`` is not a regular file, or the rename fails.
    """
    out = Path(path)
    fd, probe = _new_temp(out)  # a new file's mode is the umask's: the published file gets the same
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
        _drop(probe)
    try:
        with open(written, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(written, mode)
        _replace(written, out)
    except OSError as e:
        raise InputError(f"{out}: writing failed ({e.strerror or e}); check free space and permissions") from e
    _sync_folder(out)
    return out


def write_bytes_atomic(
    path: PathLike,
    data: bytes | memoryview,
    *,
    inputs: Iterable[PathLike] = (),
    verify: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_write`."""
    with atomic_write(path, inputs=inputs, verify=verify) as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` so that readers see the old file or the whole new one, never a part."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def register_temp(path: PathLike) -> None:
    """Have a temporary file or folder (made by a writer that cannot use :func:`atomic_write`) removed on exit."""
    with _LOCK:
        _LIVE.add(str(path))


def release_temp(path: PathLike) -> None:
    """Remove ``path`` (file or folder) and forget it."""
    import shutil

    p = str(path)
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(p)
    with _LOCK:
        _LIVE.discard(p)


def _cleanup() -> None:
    for p in list(_LIVE):
        release_temp(p)


atexit.register(_cleanup)


class _Terminated(SystemExit):
    """Raised in the main thread by SIGTERM so that every ``finally`` (and temporary clean-up) runs."""


def _on_term(signum: int, frame: Any) -> None:
    raise _Terminated(128 + signum)


@contextlib.contextmanager
def command_scope(inputs: Iterable[PathLike], outputs: Iterable[PathLike]) -> Iterator[None]:
    """Declare one command's inputs and outputs; check every output up front; clean temporaries on signals.

    Raises:
        InputError: an output collides with an input or another output, or is not a regular file.
    """
    ins = [Path(p) for p in inputs]
    outs = [Path(p) for p in outputs]
    for p in ins:
        check_input_kind(p)
    for i, o in enumerate(outs):
        check_output_path(o, *ins, others=outs[:i], folder=False)
    old = None
    main = threading.current_thread() is threading.main_thread()
    if main:
        with contextlib.suppress(ValueError, OSError):
            old = signal.signal(signal.SIGTERM, _on_term)
    _SCOPE.append(_Scope(ins, outs))
    try:
        yield
    finally:
        _SCOPE.pop()
        _cleanup()
        if main and old is not None:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signal.SIGTERM, old)
