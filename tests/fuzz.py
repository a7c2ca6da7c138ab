"""A seeded mutation fuzzer for the command line: ONNX, TFLite, ``.tslim``, recipe and ``.npz`` inputs.

Each case mutates a small valid file (bit flips, interesting bytes, truncation, duplicated or spliced chunks;
for YAML, token-level edits such as aliases, brackets and repeats), runs one command on it in a forked child
(the CLI modules are imported once, so a case costs a fork, not an interpreter start) under an address-space
cap (``RLIMIT_AS``) and a time limit, and checks the contract:

* the exit code is 0 or 2, not 1/3 or a signal (segfault, abort, OOM kill), and the run ends in time;
* stderr holds no traceback;
* the input file's bytes are unchanged;
* on failure nothing is left at ``-o``, and no temporary file is left in the output folder;
* the child's peak resident memory stays under a fixed cap.

Short runs are part of the test suite (``tests/test_fuzz.py``); for a long run::

    PYTHONPATH=src python tests/fuzz.py --seconds 1200 --seed 1 [--kinds onnx,tflite,tslim,recipe,npz]

It prints one line per finding (kind, command, mutation, what broke; the failing file is kept under
``--keep``) and a summary: cases tried per kind, findings, peak memory seen.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: address-space cap of each case (ONNX Runtime and LiteRT reserve a lot of virtual memory up front)
AS_CAP = int(os.environ.get("TENSORSLIM_FUZZ_AS_BYTES", str(8 << 30)))
#: peak resident memory a case may reach
RSS_CAP = int(os.environ.get("TENSORSLIM_FUZZ_RSS_BYTES", str(2 << 30)))
CASE_SECONDS = 90
KINDS = ("onnx", "tflite", "tslim", "recipe", "npz")


@dataclass
class Finding:
    kind: str
    command: list[str]
    mutation: str
    problem: str
    kept: str = ""


@dataclass
class Summary:
    cases: dict[str, int] = field(default_factory=dict)
    exits: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    peak_rss: int = 0
    seconds: float = 0.0


def _seeds(folder: Path) -> dict[str, bytes]:
    """Small valid inputs of every kind, plus the fixed companions the commands need."""
    import onnx

    import tflite_models as tm
    from models import mlp_model
    from tensorslim.pack import pack_model

    model, feeds = mlp_model()
    onnx.save(model, str(folder / "ref.onnx"))
    pack_model(model, folder / "seed.tslim")
    buf = io.BytesIO()
    labels = np.arange(16) % 10
    np.savez(buf, x=feeds["x"], label=labels)
    from tensorslim.recipe import builtin_recipes
    from tensorslim.recipe.schema import dump_recipe

    recipe = dump_recipe(builtin_recipes().get("dynamic-int8"))
    return {
        "onnx": model.SerializeToString(),
        "tflite": tm.cnn(),
        "tslim": (folder / "seed.tslim").read_bytes(),
        "recipe": recipe.encode(),
        "npz": buf.getvalue(),
    }


_INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0xFE, 0x10, 0x40]
_YAML_TOKENS = ["&a ", "*a", "[", "]", "{", "}", "<<: *a", "- ", ": ", "!!python/object:os.system ", "'(a+)+$'",
                "\n  - pass: prune\n", "1e999", "-1", "null", "~", "\t", "'[z-a]'", "'w[/x]'"]  # fmt: skip


def mutate(data: bytes, kind: str, r: random.Random) -> tuple[bytes, str]:
    """One to four random edits of ``data``; returns the bytes and a description."""
    b = bytearray(data)
    done = []
    for _ in range(r.choice([1, 1, 1, 2, 3])):
        op = r.choice(
            ["flip", "byte", "int", "cut", "dup", "insert", "splice"] + (["yaml"] * 4 if kind == "recipe" else [])
        )
        if not b:
            b = bytearray(b"\x00")
        i = r.randrange(len(b))
        if op == "flip":
            b[i] ^= 1 << r.randrange(8)
        elif op == "byte":
            b[i] = r.choice(_INTERESTING)
        elif op == "int":  # a 4- or 8-byte integer field set to an extreme
            width = r.choice([4, 8])
            val = r.choice([0, 1, 2**31 - 1, 2**32 - 1, 2**63 - 1, 2**64 - 1, 2 ** (8 * width - 1)]) % 2 ** (8 * width)
            b[i : i + width] = val.to_bytes(width, "little")
        elif op == "cut":
            b = b[: r.randrange(len(b) + 1)]
        elif op == "dup":
            j = r.randrange(i, min(len(b), i + 256) + 1)
            b[j:j] = b[i:j] * r.randint(1, 8)
        elif op == "insert":
            b[i:i] = bytes(r.randrange(256) for _ in range(r.randint(1, 16)))
        elif op == "splice":
            j = r.randrange(len(b))
            n = r.randint(1, 64)
            b[i : i + n] = b[j : j + n]
        else:
            tok = r.choice(_YAML_TOKENS).encode()
            b[i:i] = tok * (1 if r.random() < 0.8 else r.randint(2, 200))
        done.append(op)
    return bytes(b), "+".join(done)


_VALUES = [0, -1, 1, 2**31, 2**63 - 1, 10**12, 3.5, "x", None, [], {}, [1, [2]], True, "zstd", "lzma", "raw"]


def mutate_structured(data: bytes, kind: str, r: random.Random) -> tuple[bytes, str] | None:
    """An edit that keeps the container valid (parses, checksums) so that deeper checks are reached."""
    if kind == "tslim":
        import struct

        from tensorslim.pack.format import checksum

        head = struct.Struct("<8sHHIQ32s")
        magic, ver, flags, mlen, blen, _ = head.unpack(data[: head.size])
        mraw = data[head.size : head.size + mlen]
        if flags & 1:  # format 2: a zstd-compressed manifest; written back plain
            import zstandard

            mraw = zstandard.ZstdDecompressor().decompress(mraw)
            flags &= ~1
        manifest = json.loads(mraw)
        body = data[head.size + mlen :]
        node, path = manifest, []
        while isinstance(node, dict | list) and node and r.random() < 0.8:
            key = r.choice(list(node)) if isinstance(node, dict) else r.randrange(len(node))
            path.append(key)
            if not isinstance(node[key], dict | list) or r.random() < 0.3:
                node[key] = r.choice(_VALUES)
                break
            node = node[key]
        mbytes = json.dumps(manifest).encode()
        digest = checksum(ver, flags, mbytes, body)
        return head.pack(magic, ver, flags, len(mbytes), len(body), digest) + mbytes + body, f"manifest{path}"
    if kind == "onnx":
        import onnx

        m = onnx.ModelProto()
        m.ParseFromString(data)
        g = m.graph
        what = r.choice(["dims", "dtype", "op", "drop_input", "attr", "rename"])
        if what == "dims" and g.initializer:
            t = r.choice(list(g.initializer))
            if t.dims:
                t.dims[r.randrange(len(t.dims))] = r.choice([0, 1, -1, 3, 2**31, 2**40])
        elif what == "dtype" and g.initializer:
            r.choice(list(g.initializer)).data_type = r.randrange(0, 25)
        elif what == "op":
            r.choice(list(g.node)).op_type = r.choice(["Conv", "Gather", "LSTM", "MatMul", "Foo", "Reshape"])
        elif what == "drop_input":
            n = r.choice(list(g.node))
            if n.input:
                del n.input[-1]
        elif what == "attr":
            n = r.choice(list(g.node))
            n.attribute.append(
                onnx.helper.make_attribute(r.choice(["transB", "axis", "group"]), r.choice([-5, 0, 7, 2**40]))
            )
        else:
            r.choice(list(g.node)).name = r.choice(["w[/x]", "[bold red]EVIL[/bold red]", "", "a" * 5000])
        return m.SerializeToString(), f"proto:{what}"
    if kind == "tflite":
        from tensorslim.backends.tflite.io import model_from_bytes, serialize

        m = model_from_bytes(data)
        sg = m.subgraphs[0]
        what = r.choice(["op_inputs", "shape", "type", "buffer", "opcode"])
        if what == "op_inputs":
            op = r.choice(sg.operators)
            op.inputs = (
                op.inputs[: r.randrange(len(op.inputs) + 1)]
                if r.random() < 0.5
                else np.asarray([r.choice([-1, 0, len(sg.tensors) - 1]) for _ in op.inputs], np.int32)
            )
        elif what == "shape":
            t = r.choice(sg.tensors)
            if t.shape is not None and len(t.shape):
                t.shape[r.randrange(len(t.shape))] = r.choice([0, 1, -1, 7, 2**30])
        elif what == "type":
            r.choice(sg.tensors).type = r.randrange(0, 18)
        elif what == "buffer":
            b = r.choice([b for b in m.buffers if b.data is not None] or m.buffers)
            if b.data is not None:
                b.data = b.data[: r.randrange(len(b.data) + 1)]
        else:
            r.choice(sg.operators).opcodeIndex = r.randrange(len(m.operatorCodes))
        return serialize(m), f"object:{what}"
    if kind == "npz":
        if r.random() < 0.3:
            return _mutate_zip(data, r)
        with np.load(io.BytesIO(data)) as z:
            arrays = {k: z[k] for k in z.files}
        what = r.choice(["dtype", "shape", "nan", "extra", "drop", "labels"])
        k = r.choice(list(arrays))
        if what == "dtype":
            arrays[k] = arrays[k].astype(r.choice([np.float64, np.int8, np.uint8, np.bool_, np.float16, np.complex64]))
        elif what == "shape":
            arrays[k] = arrays[k].reshape(-1)[: r.randrange(arrays[k].size + 1)]
        elif what == "nan":
            arrays[k] = np.full(arrays[k].shape, r.choice([np.nan, np.inf, 1e38]), np.float32)
        elif what == "extra":
            arrays[r.choice(["y", "label", "x "])] = np.zeros((r.randrange(4), 3), np.float32)
        elif what == "drop":
            arrays.pop(k)
        else:
            arrays["label"] = r.choice([np.full(16, 0.5), np.array(["a"] * 16), np.full(16, 10**6), np.zeros((16, 10))])
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue(), f"arrays:{what}"
    return None


# zip header fields (offset from the signature, width): version needed, flags, method, CRC, sizes, name and extra
# lengths, and (central directory only) the local header offset
_ZIP_FIELDS = {b"PK\x01\x02": [(6, 2), (8, 2), (10, 2), (16, 4), (20, 4), (24, 4), (28, 2), (30, 2), (42, 4)],
               b"PK\x03\x04": [(4, 2), (6, 2), (8, 2), (14, 4), (18, 4), (22, 4), (26, 2), (28, 2)]}  # fmt: skip
_ZIP_VALUES = [0, 1, 8, 9, 12, 14, 20, 45, 63, 64, 99, 255, 0xFFFF, 0xFFFFFFFF, 2**31]


def _mutate_zip(data: bytes, r: random.Random) -> tuple[bytes, str]:
    """One header field of one zip entry (local or central) set to an odd value; for deflated members also
    the start of the compressed data overwritten (a corrupt deflate stream)."""
    b = bytearray(data if r.random() < 0.7 else _recompressed(data))
    sig = r.choice(list(_ZIP_FIELDS))
    spots = [i for i in range(len(b) - 46) if b[i : i + 4] == sig]
    if not spots:
        return bytes(b), "zip:none"
    at = r.choice(spots)
    off, width = r.choice(_ZIP_FIELDS[sig])
    value = r.choice(_ZIP_VALUES) % (1 << (8 * width))
    b[at + off : at + off + width] = value.to_bytes(width, "little")
    return bytes(b), f"zip:{sig[2]}{sig[3]}+{off}={value}"


def _recompressed(data: bytes) -> bytes:
    """The same arrays in a deflated zip, with one member's first compressed bytes damaged."""
    buf = io.BytesIO()
    with np.load(io.BytesIO(data)) as z:
        np.savez_compressed(buf, **{k: z[k] for k in z.files})
    b = bytearray(buf.getvalue())
    i = b.find(b"PK\x03\x04")
    name, extra = int.from_bytes(b[i + 26 : i + 28], "little"), int.from_bytes(b[i + 28 : i + 30], "little")
    start = i + 30 + name + extra
    b[start : start + 2] = b"\xff\xff"
    return bytes(b)


def commands(kind: str, path: Path, ref: Path, npz_ref: Path, out_dir: Path) -> list[tuple[list[str], Path | None]]:
    """The commands run on one mutated input, each with its -o (or None)."""
    o_onnx, o_tfl = out_dir / "out.onnx", out_dir / "out.tflite"
    p = str(path)
    if kind == "onnx":
        return [(["inspect", p], None), (["quantize", p, "-o", str(o_onnx), "--no-check-speed"], o_onnx),
                (["eval", str(ref), p, "--max-samples", "4"], None)]  # fmt: skip
    if kind == "tflite":
        return [(["inspect", p], None), (["quantize", p, "-o", str(o_tfl), "--no-check-speed"], o_tfl),
                (["bench", p, "--seconds", "0.05", "--no-memory"], None)]  # fmt: skip
    if kind == "tslim":
        return [(["unpack", p, "-o", str(o_onnx)], o_onnx)]
    if kind == "recipe":
        return [(["recipe", "check", p], None), (["run", p, str(ref), "-o", str(o_onnx)], o_onnx)]
    return [(["eval", str(ref), str(ref), "--data", p], None),
            (["quantize", str(ref), "-o", str(o_onnx), "--mode", "static", "--data", p, "--no-check-speed"], o_onnx)]  # fmt: skip


def run_case(args: list[str], out_dir: Path, timeout: float = CASE_SECONDS) -> tuple[str, int, str]:
    """Run ``tensorslim ARGS`` in a forked child; returns (status, peak RSS bytes, stderr).

    status: ``exit N``, ``signal NAME`` or ``timeout``.
    """
    err_path = out_dir / "stderr.txt"
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 3
        try:
            resource.setrlimit(resource.RLIMIT_AS, (AS_CAP, AS_CAP))
            fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(fd, 2)
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - pytest swaps these for capture objects
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
            from tensorslim.commands import build_app

            try:
                build_app()(args=args, prog_name="tensorslim", standalone_mode=True)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 99
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        wpid, status, usage = os.wait4(pid, os.WNOHANG)
        if wpid:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            return "timeout", int(usage.ru_maxrss) * 1024, err_path.read_text(errors="replace")
        time.sleep(0.02)
    stderr = err_path.read_text(errors="replace") if err_path.exists() else ""
    rss = int(usage.ru_maxrss) * 1024
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}", rss, stderr
    return f"exit {os.WEXITSTATUS(status)}", rss, stderr


def fuzz(seconds: float, seed: int, kinds: tuple[str, ...] = KINDS, keep: Path | None = None,
         log: Callable[[str], None] = print) -> Summary:  # fmt: skip
    """Mutate and run until ``seconds`` have passed (at least one case per kind)."""
    r = random.Random(seed)
    summary = Summary()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tensorslim-fuzz-") as tmp:
        base = Path(tmp)
        seeds = _seeds(base)
        ref = base / "ref.onnx"
        npz_ref = base / "ref.npz"
        npz_ref.write_bytes(seeds["npz"])
        i = 0
        while i < len(kinds) or time.monotonic() - start < seconds:
            kind = kinds[i % len(kinds)]
            i += 1
            structured = mutate_structured(seeds[kind], kind, r) if r.random() < 0.6 else None
            data, how = structured if structured is not None else mutate(seeds[kind], kind, r)
            case = base / f"case{i}"
            case.mkdir()
            suffix = {"onnx": ".onnx", "tflite": ".tflite", "tslim": ".tslim", "recipe": ".yaml", "npz": ".npz"}[kind]
            path = case / f"input{suffix}"
            path.write_bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            for args, out in commands(kind, path, ref, npz_ref, case):
                status, rss, stderr = run_case(args, case)
                summary.cases[kind] = summary.cases.get(kind, 0) + 1
                summary.exits[status] = summary.exits.get(status, 0) + 1
                summary.peak_rss = max(summary.peak_rss, rss)
                problems = []
                if status not in ("exit 0", "exit 2"):
                    problems.append(status)
                if "Traceback" in stderr:
                    problems.append("traceback")
                ours = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
                if status == "exit 2" and (len(ours) != 1 or not stderr.rstrip().endswith(ours[0].rstrip())):
                    problems.append("not one error line at the end")  # native runtimes may log above it
                if rss > RSS_CAP:
                    problems.append(f"peak RSS {rss / 2**20:.0f} MiB")
                if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                    problems.append("input modified")
                if out is not None and status != "exit 0" and out.exists():
                    problems.append("output left after failure")
                leftovers = [q.name for q in case.iterdir() if q.name.startswith(".") and q.name.endswith(".tmp")]
                if leftovers:
                    problems.append(f"temporaries left: {leftovers}")
                if problems:
                    kept = ""
                    if keep is not None:
                        keep.mkdir(parents=True, exist_ok=True)
                        dest = keep / f"{kind}-{seed}-{i}{suffix}"
                        shutil.copyfile(path, dest)
                        kept = str(dest)
                    last = stderr.strip().splitlines()[-1][:200] if stderr.strip() else ""
                    f = Finding(kind, args[:1], how, "; ".join(problems) + (f" [{last}]" if last else ""), kept)
                    summary.findings.append(f)
                    log(f"FINDING {f.kind} {' '.join(f.command)} ({f.mutation}): {f.problem} {f.kept}")
                if out is not None:
                    out.unlink(missing_ok=True)
            shutil.rmtree(case, ignore_errors=True)
    summary.seconds = time.monotonic() - start
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--keep", type=Path, default=Path("fuzz-findings"), help="where failing inputs are copied")
    a = ap.parse_args()
    from tensorslim.commands import build_app

    build_app()  # import every command module once, before forking

    s = fuzz(a.seconds, a.seed, tuple(a.kinds.split(",")), a.keep)
    print(json.dumps({"seed": a.seed, "seconds": round(s.seconds, 1), "cases": s.cases, "exits": s.exits,
                      "findings": len(s.findings), "peak_rss_mib": round(s.peak_rss / 2**20),
                      "as_cap_gib": AS_CAP / 2**30, "rss_cap_gib": RSS_CAP / 2**30}))  # fmt: skip


if __name__ == "__main__":
    main()
