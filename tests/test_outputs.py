"""The output policy: no command overwrites its inputs or another output, replaces a FIFO or device, leaves a
partial or unverified file at -o, or leaves temporaries behind (exceptions and SIGTERM alike)."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from models import F, cli, make, mlp_model, rng
from tensorslim.backends.onnx import save_model
from tensorslim.errors import InputError


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    model, feeds = mlp_model()
    save_model(model, tmp_path / "in.onnx")
    np.savez(tmp_path / "calib.npz", x=feeds["x"])
    (tmp_path / "link.onnx").symlink_to(tmp_path / "in.onnx")
    os.link(tmp_path / "in.onnx", tmp_path / "hard.onnx")
    return tmp_path


COLLISIONS = {
    "json_is_input": (["quantize", "in.onnx", "-o", "q.onnx", "--json", "in.onnx"], "in.onnx"),
    "report_is_input": (["quantize", "in.onnx", "-o", "q.onnx", "--report", "in.onnx"], "in.onnx"),
    "json_is_calibration": (
        ["quantize", "in.onnx", "-o", "q.onnx", "--json", "calib.npz", "--mode", "static", "--data", "calib.npz"],
        "calib.npz",
    ),
    "json_is_the_output": (["quantize", "in.onnx", "-o", "q.onnx", "--json", "q.onnx"], None),
    "json_through_symlink": (["quantize", "in.onnx", "-o", "q.onnx", "--json", "link.onnx"], "in.onnx"),
    "output_is_hard_link": (["quantize", "link.onnx", "-o", "hard.onnx"], "in.onnx"),
    "eval_json_is_reference": (["eval", "in.onnx", "hard.onnx", "--json", "in.onnx"], "in.onnx"),
    "bench_json_is_model": (["bench", "in.onnx", "--json", "in.onnx", "--seconds", "0.1"], "in.onnx"),
}


@pytest.mark.parametrize("case", sorted(COLLISIONS))
def test_an_output_that_is_an_input_or_another_output_is_refused(
    work: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    args, protected = COLLISIONS[case]
    monkeypatch.chdir(work)
    before = {p.name: sha(p) for p in work.iterdir() if p.is_file()}
    r = cli(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "error:" in r.stderr and "Traceback" not in r.stderr
    assert {p.name: sha(p) for p in work.iterdir() if p.is_file() and p.name in before} == before
    assert not (work / "q.onnx").exists()
    if protected is not None:
        assert "input" in r.stderr


def test_a_fifo_or_folder_output_is_never_replaced(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    os.mkfifo(work / "pipe")
    for args in (["-o", "pipe"], ["-o", "q.onnx", "--json", "pipe"]):
        r = cli("quantize", "in.onnx", *args, "--no-check-speed")
        assert r.returncode == 2, r.stderr
        assert "FIFO" in r.stderr
        assert stat.S_ISFIFO(os.stat(work / "pipe").st_mode)
    (work / "folder").mkdir()
    r = cli("quantize", "in.onnx", "-o", "q.onnx", "--json", "folder", "--no-check-speed")
    assert r.returncode == 2 and "is a folder" in r.stderr


def test_a_fifo_input_is_refused_without_reading_it(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A FIFO given as a model or data (or hidden in a folder of feeds) would block the read forever."""
    import tensorslim as ts
    from tensorslim.api import load_calibration
    from tensorslim.errors import InputError

    monkeypatch.chdir(work)
    os.mkfifo(work / "pipe")
    (work / "feeds").mkdir()
    os.mkfifo(work / "feeds" / "a.npz")
    cases = [("eval", "in.onnx", "pipe"), ("bench", "pipe"), ("inspect", "pipe"), ("doctor", "pipe"),
             ("unpack", "pipe", "-o", "u.onnx"), ("recipe", "check", "pipe"),
             ("quantize", "in.onnx", "-o", "q.onnx", "--mode", "static", "--data", "pipe"),
             ("quantize", "in.onnx", "-o", "q.onnx", "--mode", "static", "--data", "feeds")]  # fmt: skip
    for args in cases:
        r = cli(*args)
        assert r.returncode == 2 and "is a FIFO, not a regular file" in r.stderr, (args, r.stderr)
    with pytest.raises(InputError, match="is a FIFO"):
        load_calibration(work / "feeds", work / "in.onnx")
    with pytest.raises(InputError, match="is a FIFO"):
        ts.evaluate(work / "in.onnx", work / "pipe")
    assert stat.S_ISFIFO(os.stat(work / "pipe").st_mode)


def test_optimize_refuses_an_input_that_is_its_own_best_file(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(work)
    (work / "out").mkdir()
    best = work / "out" / "best.onnx"
    best.write_bytes((work / "in.onnx").read_bytes())
    before = sha(best)
    r = cli("optimize", str(best), "--data", "calib.npz", "--eval-data", "calib.npz", "-o", "out", "--budget", "1",
            "--workers", "1", "--no-builtins")  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert "input" in r.stderr
    assert sha(best) == before


def test_outputs_follow_the_umask(work: Path) -> None:
    from tensorslim.pack import pack_model

    old = os.umask(0o022)
    try:
        save_model(mlp_model()[0], work / "a.onnx")
        save_model(mlp_model()[0], work / "e.onnx", external_data=True)  # ONNX's saver, then tensorslim's rename
        pack_model(work / "in.onnx", work / "a.tslim")
        tflite = pytest.importorskip("tflite_models")
        from tensorslim.backends.tflite.io import model_from_bytes
        from tensorslim.backends.tflite.io import save_model as save_tflite

        save_tflite(model_from_bytes(tflite.mlp()), work / "a.tflite")
    finally:
        os.umask(old)
    assert not [p for p in work.iterdir() if p.name.startswith(".")]  # no temporary folder left
    for name in ("a.onnx", "e.onnx", "e.onnx.data", "a.tslim", "a.tflite"):
        assert stat.S_IMODE(os.stat(work / name).st_mode) == 0o644, name


def test_a_failed_verification_leaves_nothing(work: Path) -> None:
    def refuse(tmp: Path) -> None:
        assert tmp.is_file() and tmp.parent == work
        raise InputError("verification failed")

    with pytest.raises(InputError, match="verification failed"):
        save_model(mlp_model()[0], work / "v.onnx", verify=refuse)
    assert not (work / "v.onnx").exists()
    assert not [p for p in work.iterdir() if p.name.startswith(".")]


def test_sigterm_mid_write_leaves_no_temporary(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from tensorslim._files import atomic_write, command_scope\n"
        "with command_scope([], []):\n"
        "    with atomic_write(sys.argv[1]) as f:\n"
        "        f.write(b'x' * 1000); f.flush(); print('ready', flush=True); time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "o.bin")], stdout=subprocess.PIPE, env=env)
    assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
    assert [q.name for q in tmp_path.iterdir() if q.name.endswith(".tmp")]
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)
    time.sleep(0.1)
    assert list(tmp_path.iterdir()) == []


def test_markup_in_names_and_patterns_is_printed_as_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    w = rng(0).standard_normal((32, 64)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w[/x]"], ["y"], name="[bold red]EVIL[/bold red]")]
    save_model(make(nodes, [("x", F, [1, 32])], [("y", F, [1, 64])], {"w[/x]": w}), tmp_path / "m.onnx")
    r = cli("quantize", "m.onnx", "-o", "q.onnx", "--no-check-speed", "--show-all")
    assert r.returncode == 0, r.stderr
    assert "w[/x]" in r.stdout
    r = cli("inspect", "m.onnx")
    assert r.returncode == 0, r.stderr
    assert "w[/x]" in r.stdout
    r = cli("quantize", "m.onnx", "-o", "q2.onnx", "--exclude", "[z-a]")
    assert r.returncode == 2
    assert "[z-a]" in r.stderr


def test_a_temporary_left_by_a_killed_writer_is_removed_by_the_next(tmp_path: Path) -> None:
    from tensorslim._files import write_text_atomic

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".o.json.{int(dead.stdout)}.abcd1234.tmp"
    stale.write_text("half")
    live = tmp_path / f".o.json.{os.getpid()}.abcd1234.tmp"
    live.write_text("ours")
    write_text_atomic(tmp_path / "o.json", "{}")
    assert not stale.exists() and live.exists()
    assert (tmp_path / "o.json").read_text() == "{}"


def test_the_python_api_of_optimize_refuses_its_best_file_as_input(work: Path) -> None:
    from tensorslim.search.optimize import optimize_search

    (work / "out").mkdir()
    best = work / "out" / "best.onnx"
    best.write_bytes((work / "in.onnx").read_bytes())
    with pytest.raises(InputError, match="input"):
        optimize_search(best, data=work / "calib.npz", eval_data=work / "calib.npz", output_dir=work / "out")
    assert best.read_bytes() == (work / "in.onnx").read_bytes()
