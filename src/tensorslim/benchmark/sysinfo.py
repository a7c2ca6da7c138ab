"""Host facts recorded with every benchmark: CPU model, int8/fp16-relevant ISA flags, onnxruntime version."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

from .report import EnvInfo

__all__ = ["RELEVANT_FLAGS", "cpu_info", "env_info"]

#: ISA flags that decide which int8 / fp16 kernels onnxruntime can use (x86 and aarch64 spellings).
RELEVANT_FLAGS: frozenset[str] = frozenset(
    {
        # x86
        "avx2",
        "avx512f",
        "avx512bw",
        "avx512_vnni",
        "avx_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "amx_int8",
        "amx_tile",
        "amx_bf16",
        "f16c",
        "fma",
        # aarch64
        "asimd",
        "asimddp",
        "asimdhp",
        "i8mm",
        "fphp",
        "bf16",
        "sve",
        "sve2",
    }
)


def _parse_cpuinfo(text: str) -> tuple[str, tuple[str, ...]]:
    model = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        value = value.strip()
        if not model and key in ("model name", "hardware", "cpu model", "processor") and value:
            # "processor" is a bare index on x86 but a name on some ARM kernels.
            if key != "processor" or not value.isdigit():
                model = value
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, tuple(sorted(flags & RELEVANT_FLAGS))


@functools.cache
def cpu_info() -> tuple[str, tuple[str, ...]]:
    """Return the CPU model name and the relevant ISA flags (sorted) from ``/proc/cpuinfo``.

    Falls back to ``platform.processor()`` and no flags where ``/proc/cpuinfo`` is unavailable.
    """
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    model, flags = _parse_cpuinfo(text)
    if not model:
        model = platform.processor() or "unknown"
    return model, flags


def env_info(threads: int, execution_provider: str = "CPUExecutionProvider") -> EnvInfo:
    """Collect the :class:`EnvInfo` of this process."""
    import onnxruntime as ort

    model, flags = cpu_info()
    return EnvInfo(
        onnxruntime_version=str(ort.__version__),
        execution_provider=execution_provider,
        threads=threads,
        cpu_model=model,
        cpu_flags=flags,
        machine=platform.machine(),
        python_version=platform.python_version(),
    )
