"""A zoo of architectures through every mode: does the output load, run, shrink and keep its outputs?

Every architecture of :mod:`zoo_models` (transformers from tiny random configs, CNN families and recurrent
models in plain torch) is exported once per variant (opset x fixed/dynamic batch) and cached under
``benchmarks/.cache/zoo/``; each variant then goes through every mode via the Python API:

* ``dynamic`` (the default), ``weight_only``, ``static`` (calibrated on generated samples given as a list of
  per-sample feeds), ``int4`` (with the same data: GPTQ), ``fp16``, ``prune``, ``cluster``, ``pack`` (pack,
  then unpack and run the unpacked model);

and is checked: the output loads and runs in ONNX Runtime, is smaller than the input (not for prune and
cluster, which keep the tensors' shapes), and keeps the output cosine on generated inputs (>= 0.99 dynamic,
weight-only, fp16, int4; >= 0.98 static; bit-exact for pack/unpack; reported only for prune and cluster).
A run that raises anything but :class:`~tensorslim.errors.InputError` is an internal error (what the CLI
would exit 3 on), and fails.

    python benchmarks/zoo.py            # everything, writes benchmarks/ZOO.md
    python benchmarks/zoo.py --quick    # five models, one variant each (CI)
    python benchmarks/zoo.py --only 'bert|lstm' --modes dynamic,static
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo_models as zm

CACHE = Path(__file__).resolve().parent / ".cache" / "zoo"
MODES = ("dynamic", "weight_only", "static", "int4", "fp16", "prune", "cluster", "pack")
THRESHOLDS = {"dynamic": 0.99, "weight_only": 0.99, "fp16": 0.99, "int4": 0.99, "static": 0.98, "pack": 0.999999}
QUICK = ("bert", "vit", "resnet", "mobilenet-v3", "lstm-text")
#: The five models of the quick run get one variant each (opset 17, dynamic batch).


@dataclass
class Variant:
    arch: zm.Arch
    opset: int
    dynamic: bool

    @property
    def name(self) -> str:
        return f"{self.arch.name}-op{self.opset}-{'dyn' if self.dynamic else 'b1'}"

    @property
    def path(self) -> Path:
        return CACHE / f"{self.name}.onnx"

    def feeds(self, batch: int, seed: int) -> dict[str, np.ndarray]:
        return self.arch.inputs(batch, np.random.default_rng(seed))


@dataclass
class Row:
    variant: str
    mode: str
    ok: bool
    ratio: float | None = None
    cosine: float | None = None
    error: str = ""
    seconds: float = 0.0


def variants(arch: zm.Arch) -> list[Variant]:
    """The first opset with a dynamic batch (where the model has one), the others with a fixed batch of 1."""
    return [Variant(arch, op, i == 0) for i, op in enumerate(arch.opsets)]


def export(v: Variant) -> Path:
    """Export (once: cached) the variant's ONNX file."""
    if v.path.exists():
        return v.path
    import torch

    v.path.parent.mkdir(parents=True, exist_ok=True)
    module = v.arch.build()
    feeds = v.feeds(1, 0)
    args = tuple(torch.from_numpy(a) for a in feeds.values())
    names = list(feeds)
    axes = dict(v.arch.batch_axes)
    dynamic = {n: {axes.get(n, 0): "batch"} for n in names if axes.get(n, 0) >= 0} if v.dynamic else None
    if dynamic is not None:
        dynamic.update({o: {0: "batch"} for o in v.arch.outputs if o not in ("hn", "cn", "stateN")})
        dynamic.update({o: {1: "batch"} for o in v.arch.outputs if o in ("hn", "cn", "stateN")})
    if v.arch.script:
        module = torch.jit.script(module)
    tmp = v.path.with_suffix(".tmp.onnx")
    with contextlib.redirect_stderr(io.StringIO()), _quiet():
        torch.onnx.export(
            module, args, str(tmp), input_names=names, output_names=list(v.arch.outputs), opset_version=v.opset,
            dynamic_axes=dynamic, dynamo=False, do_constant_folding=True,
        )  # fmt: skip
    for extra in tmp.parent.glob(tmp.name + "*.data"):  # pragma: no cover - tiny models have no external data
        extra.unlink()
    os.replace(tmp, v.path)
    return v.path


@contextlib.contextmanager
def _quiet() -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _run(path: Path | Any, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    src = str(path) if isinstance(path, Path) else path.SerializeToString()
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return [sess.run(None, {k: v for k, v in f.items() if k in names}) for f in feeds]


def _cosine(ref: list[list[np.ndarray]], cand: list[list[np.ndarray]]) -> float:
    worst = 1.0
    for rs, cs in zip(ref, cand, strict=True):
        for r, c in zip(rs, cs, strict=True):
            a, b = r.astype(np.float64).ravel(), c.astype(np.float64).ravel()
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            cos = 1.0 if na == 0 and nb == 0 else float(a @ b / (na * nb)) if na and nb else 0.0
            worst = min(worst, cos)
    return worst


def _eval_feeds(v: Variant) -> list[dict[str, np.ndarray]]:
    return [v.feeds(2 if v.dynamic else 1, 100 + i) for i in range(3)]


def _calibration(v: Variant, n: int = 32) -> list[dict[str, np.ndarray]]:
    """Per-sample feeds (the form ONNX Runtime's calibration readers produce)."""
    return [v.feeds(1, 1000 + i) for i in range(n)]


def run_mode(v: Variant, mode: str, out_dir: Path) -> Row:
    import tensorslim as ts
    from tensorslim.errors import InputError
    from tensorslim.passes.blockwise_quant import BlockQuantConfig
    from tensorslim.passes.dynamic_quant import DynamicQuantConfig
    from tensorslim.passes.float16 import Float16Config
    from tensorslim.passes.static_quant import StaticQuantConfig

    src = v.path
    out = out_dir / f"{v.name}.{mode}.onnx"
    start = time.perf_counter()
    try:
        with _quiet():
            if mode == "dynamic":
                ts.quantize(src, out)
            elif mode == "weight_only":
                ts.quantize(src, out, config=DynamicQuantConfig(form="weight_only"))
            elif mode == "static":
                ts.quantize(src, out, config=StaticQuantConfig(), data=_calibration(v))
            elif mode == "int4":
                ts.quantize(src, out, config=BlockQuantConfig(bits=4), data=_calibration(v))
            elif mode == "fp16":
                ts.quantize(src, out, config=Float16Config())
            elif mode == "prune":
                ts.prune(src, out)
            elif mode == "cluster":
                ts.cluster(src, out)
            else:
                packed = out.with_suffix(".tslim")
                ts.pack(src, packed)
                ts.unpack(packed, out)
        feeds = _eval_feeds(v)
        cos = _cosine(_run(src, feeds), _run(out, feeds))
    except InputError as e:
        return Row(v.name, mode, False, error=f"exit 2: {e}", seconds=time.perf_counter() - start)
    except Exception as e:  # what the CLI reports as an internal error (exit 3)
        tb = traceback.extract_tb(e.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb) if "tensorslim" in f.filename), "")
        msg = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        return Row(v.name, mode, False, error=f"exit 3: {msg} ({where})", seconds=time.perf_counter() - start)
    size = (out.with_suffix(".tslim") if mode == "pack" else out).stat().st_size
    ratio = size / src.stat().st_size
    ok = True
    why = []
    if mode not in ("prune", "cluster") and ratio >= 1.0:
        ok, why = False, [f"not smaller ({ratio:.3f}x)"]
    if mode in THRESHOLDS and not cos >= THRESHOLDS[mode]:
        ok = False
        why.append(f"cosine {cos:.5f} < {THRESHOLDS[mode]}")
    return Row(v.name, mode, ok, ratio, cos, "; ".join(why), time.perf_counter() - start)


def write_table(rows: list[Row], path: Path, modes: tuple[str, ...], seconds: float, command: str) -> None:
    by: dict[str, dict[str, Row]] = {}
    for r in rows:
        by.setdefault(r.variant, {})[r.mode] = r
    passed = sum(r.ok for r in rows)
    lines = [
        "# Zoo: every architecture through every mode",
        "",
        f"`{command}` ({len(by)} model variants x {len(modes)} modes, {passed}/{len(rows)} pass, "
        f"{seconds / 60:.1f} min). Random weights, tiny configs, generated inputs; a cell is the size ratio "
        "(output / input file), the worst output cosine over 3 generated batches, and pass/FAIL. Pass: loads and "
        "runs in ONNX Runtime, smaller (not required of prune and cluster, which keep tensor shapes), cosine "
        ">= 0.99 (dynamic, weight_only, fp16, int4), >= 0.98 (static), bit-exact (pack -> unpack; the ratio is "
        "the .tslim file's).",
        "",
        "| model | " + " | ".join(modes) + " |",
        "|---|" + "---|" * len(modes),
    ]
    for name, cells in by.items():
        out = []
        for m in modes:
            r = cells.get(m)
            if r is None:
                out.append("")
            elif r.ratio is None:
                out.append("FAIL (error)")
            else:
                out.append(f"{r.ratio:.2f}x {r.cosine:.4f} {'pass' if r.ok else 'FAIL'}")
        lines.append(f"| {name} | " + " | ".join(out) + " |")
    fails = [r for r in rows if not r.ok]
    if fails:
        lines += ["", "## Failures", ""]
        lines += [f"- `{r.variant}` {r.mode}: {r.error}" for r in fails]
    path.write_text("\n".join(lines) + "\n")


_LINE = re.compile(
    r"^(?P<variant>\S+)\s+(?P<mode>\S+)\s+(?P<ok>pass|FAIL)\s(?:(?P<ratio>[0-9.]+)x cos (?P<cos>[0-9.]+))?\s*"
    r"(?P<error>.*?)\s*\[(?P<secs>[0-9.]+)s\]$"
)


def rows_from_logs(paths: list[Path]) -> list[Row]:
    """The rows printed by earlier runs (later logs win for the same model and mode), to assemble one table."""
    rows: dict[tuple[str, str], Row] = {}
    for p in paths:
        for line in p.read_text().splitlines():
            m = _LINE.match(line)
            if m is None:
                continue
            ratio = float(m["ratio"]) if m["ratio"] else None
            cos = float(m["cos"]) if m["cos"] else None
            rows[(m["variant"], m["mode"])] = Row(
                m["variant"], m["mode"], m["ok"] == "pass", ratio, cos, m["error"], float(m["secs"])
            )
    return list(rows.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}, one variant each (CI)")
    ap.add_argument("--only", default="", help="regular expression on architecture names")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    ap.add_argument("--out", type=Path, default=None, help="the table [default: benchmarks/ZOO.md; --quick: none]")
    ap.add_argument("--from-log", type=Path, nargs="+", default=None, help="write the table from run logs only")
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    if args.from_log:
        rows = rows_from_logs(args.from_log)
        out = args.out or Path(__file__).resolve().parent / "ZOO.md"
        write_table(rows, out, MODES, sum(r.seconds for r in rows), "python benchmarks/zoo.py")
        print(f"wrote {out}: {sum(r.ok for r in rows)}/{len(rows)} pass")
        return 1 if any(not r.ok for r in rows) else 0
    modes = tuple(m for m in args.modes.split(",") if m)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"--modes: unknown {unknown}; choose from {MODES}")
    archs = zm.all_archs()
    if args.quick:
        archs = [a for a in archs if a.name in QUICK]
    if args.only:
        archs = [a for a in archs if re.search(args.only, a.name)]
    todo = [v for a in archs for v in (variants(a)[:1] if args.quick else variants(a))]
    out = args.out or (None if args.quick or args.only else Path(__file__).resolve().parent / "ZOO.md")
    command = "python benchmarks/zoo.py" + (" --quick" if args.quick else "")
    start = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="tensorslim-zoo-") as tmp:
        for v in todo:
            try:
                export(v)
            except Exception as e:
                print(f"{v.name}: export failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
                rows += [Row(v.name, m, False, error=f"export failed: {type(e).__name__}") for m in modes]
                continue
            for m in modes:
                r = run_mode(v, m, Path(tmp))
                rows.append(r)
                cell = f"{r.ratio:.3f}x cos {r.cosine:.5f}" if r.ratio is not None else ""
                print(
                    f"{v.name:32s} {m:12s} {'pass' if r.ok else 'FAIL'} {cell} {r.error} [{r.seconds:.1f}s]", flush=True
                )
            if out is not None:  # after every model: an interrupted run still leaves its table
                write_table(rows, out, modes, time.perf_counter() - start, command)
    if out is not None:
        print(f"wrote {out}")
    failed = [r for r in rows if not r.ok]
    print(f"{len(rows) - len(failed)}/{len(rows)} pass in {time.perf_counter() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
