"""Hash the bytes every mode writes, so that a refactor can prove it changed no output.

Runs the CLI (``python -m tensorslim``, one process per command, so that nothing inside this
interpreter can leak into the result) on the bundled digits CNN and, with ``--minilm``, on MiniLM
exported by the benchmark helpers, in every quantization mode, every pass command and every built-in
recipe. Static int8 runs without its speed check (timing decides what the check moves, so the bytes
would depend on the machine); everything else runs with its defaults.

    python scripts/output_hashes.py --record tests/data/output_hashes.json [--minilm]
    python scripts/output_hashes.py --check tests/data/output_hashes.json [--minilm]

``--check`` exits 1 naming each output whose bytes changed. The input's own hash is recorded too: when
MiniLM's export differs (another torch or transformers), its rows are reported as not comparable
instead of failing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "src" / "tensorslim" / "examples"
BUILTINS = sorted(p.stem for p in (ROOT / "src" / "tensorslim" / "recipe" / "builtin").glob("*.yaml"))
STATIC_RECIPE = """version: 1
name: static-no-speed-check
description: static int8 without the timed speed check (the bytes must not depend on the machine)
passes:
  - pass: static_quant
    config: {latency_check: false}
"""


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def commands(model: Path, calib: Path, work: Path) -> dict[str, tuple[list[str], Path]]:
    """Name -> (CLI arguments, output path) for every mode and pass on ``model``."""
    out: dict[str, tuple[list[str], Path]] = {}

    def add(name: str, args: list[str], suffix: str = ".onnx") -> None:
        target = work / f"{name}{suffix}"
        out[name] = ([*args, "-o", str(target)], target)

    m = str(model)
    for mode in ("dynamic", "int4", "blockwise", "fp16"):
        add(f"quantize-{mode}", ["quantize", m, "--mode", mode])
    add("quantize-static", ["quantize", m, "--mode", "static", "--data", str(calib), "--no-latency-check"])
    add("prune", ["prune", m, "--sparsity", "0.5"])
    add("prune-data", ["prune", m, "--sparsity", "0.5", "--data", str(calib)])
    add("prune-2-4", ["prune", m, "--pattern", "2:4"])
    add("cluster", ["cluster", m])
    add("pack", ["pack", m], ".tslim")
    static_recipe = work / "static-no-speed-check.yaml"
    static_recipe.write_text(STATIC_RECIPE)
    for name in BUILTINS:
        recipe = str(static_recipe) if name == "static-int8" else name
        if name.startswith("static-") and name != "static-int8":
            text = (ROOT / "src" / "tensorslim" / "recipe" / "builtin" / f"{name}.yaml").read_text()
            text = text.replace("config: {}", "config: {latency_check: false}", 1)
            local = work / f"{name}.yaml"
            local.write_text(text)
            recipe = str(local)
        suffix = ".tslim" if "pack" in name else ".onnx"
        add(f"run-{name}", ["run", recipe, m, "--data", str(calib)], suffix)
    return out


def run_all(model: Path, calib: Path, only: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"input": sha(model), "outputs": {}}
    with tempfile.TemporaryDirectory(prefix="tslim-hashes-") as tmp:
        work = Path(tmp)
        for name, (args, target) in commands(model, calib, work).items():
            if only and name != only:
                continue
            proc = subprocess.run(
                [sys.executable, "-m", "tensorslim", *args], capture_output=True, text=True, check=False
            )
            if proc.returncode != 0 or not target.is_file():
                result["outputs"][name] = f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"
            else:
                result["outputs"][name] = sha(target)
            print(f"{name:36s} {result['outputs'][name]}", flush=True)
    return result


def minilm_inputs() -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np

    from realmodels import export_minilm, minilm_tokenizer

    cache = ROOT / "benchmarks" / ".cache"
    model = export_minilm(cache)
    calib = cache / "minilm_hash_calib.npz"
    if not calib.is_file():
        tok = minilm_tokenizer()
        sentences = [f"sentence number {i} about quantizing a model for phones" for i in range(8)]
        enc = tok(sentences, padding="max_length", max_length=32, truncation=True, return_tensors="np")
        np.savez(calib, **{k: np.asarray(v, dtype=np.int64) for k, v in enc.items()})
    return model, calib


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--record", type=Path)
    group.add_argument("--check", type=Path)
    parser.add_argument("--minilm", action="store_true", help="also MiniLM (needs the bench extra)")
    parser.add_argument("--only", help="one output name (e.g. run-static-int8-a16); --record updates that row")
    args = parser.parse_args()

    cases = {"digits": (EXAMPLES / "digits_cnn.onnx", EXAMPLES / "digits_calib.npz")}
    if args.minilm:
        cases["minilm"] = minilm_inputs()
    got = {name: run_all(model, calib, args.only) for name, (model, calib) in cases.items()}
    if args.record:
        previous = json.loads(args.record.read_text()) if args.record.is_file() else {}
        for case, result in got.items():
            if args.only and case in previous:
                previous[case]["outputs"].update(result["outputs"])
            else:
                previous[case] = result
        args.record.write_text(json.dumps(previous, indent=1, sort_keys=True) + "\n")
        return 0
    want = json.loads(args.check.read_text())
    bad = []
    for case, result in got.items():
        if case not in want:
            print(f"{case}: nothing recorded")
            continue
        if want[case]["input"] != result["input"]:
            print(f"{case}: the input differs from the recorded one; not comparable")
            continue
        for name, digest in want[case]["outputs"].items():
            if args.only and name != args.only:
                continue
            if result["outputs"].get(name) != digest:
                bad.append(f"{case}/{name}: {result['outputs'].get(name)} != recorded {digest}")
    print("\n".join(bad) if bad else "every output is byte-identical to the recorded one")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
