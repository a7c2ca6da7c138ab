"""``tensorslim recipe list|show|check`` and ``tensorslim run`` in-process (real files, real ORT sessions)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

from models import cli, rng
from tensorslim.recipe import builtin_recipes, load_recipe
from test_recipe import tiny_model


def test_list_names_every_builtin() -> None:
    r = cli("recipe", "list", "--json", "-")
    assert r.returncode == 0, r.stderr
    names = [x["name"] for x in json.loads(r.stdout)["recipes"]]
    assert names == builtin_recipes().names()
    r = cli("recipe", "list")
    assert r.returncode == 0 and "static-int8-a16" in r.stdout


def test_show_then_check_round_trips(tmp_path: Path) -> None:
    for name in builtin_recipes().names():
        r = cli("recipe", "show", name)
        assert r.returncode == 0, r.stderr
        f = tmp_path / f"{name}.yaml"
        f.write_text(r.stdout)
        assert load_recipe(f) == builtin_recipes().get(name)
        c = cli("recipe", "check", str(f), "--json", "-")
        assert c.returncode == 0, c.stderr
        assert json.loads(c.stdout)["name"] == name


def test_check_reports_the_key_path_and_exits_2(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(cli("recipe", "show", "static-int8").stdout.replace("config: {}", "config: {calibraton: mse}"))
    r = cli("recipe", "check", str(f))
    assert r.returncode == 2
    assert "passes[0].config.calibraton: unknown key; allowed:" in " ".join(r.stderr.split())
    assert "Traceback" not in r.stderr
    r = cli("recipe", "show", "no-such-recipe")
    assert r.returncode == 2 and "no such recipe" in r.stderr


def test_run_applies_evaluates_and_writes_json(tmp_path: Path) -> None:
    src = tmp_path / "m.onnx"
    onnx.save(tiny_model(), src)
    np.savez(tmp_path / "calib.npz", x=rng(1).standard_normal((32, 64)).astype(np.float32))
    out = tmp_path / "o.onnx"
    r = cli("run", "static-int8", str(src), "-o", str(out), "--data", str(tmp_path / "calib.npz"),
            "--eval-data", str(tmp_path / "calib.npz"), "--json", "-")  # fmt: skip
    assert r.returncode == 0, r.stderr
    payload = json.loads(r.stdout)
    assert payload["output_bytes"] == out.stat().st_size
    assert payload["evaluation"]["outputs"][0]["cosine_mean"] > 0.95
    assert len(payload["recipe_hash"]) == 64
    r = cli("run", "static-int8", str(src), "-o", str(tmp_path / "p.onnx"))
    assert r.returncode == 2 and "needs calibration data; pass --data" in r.stderr
    assert not (tmp_path / "p.onnx").exists()


def test_run_a_recipe_file_to_tslim_with_a_report(tmp_path: Path) -> None:
    src = tmp_path / "m.onnx"
    onnx.save(tiny_model(), src)
    f = tmp_path / "mine.yaml"
    f.write_text(cli("recipe", "show", "prune-cluster-pack").stdout.replace("sparsity: 0.5", "sparsity: 0.25"))
    r = cli("run", str(f), str(src), "-o", str(tmp_path / "o.tslim"), "--report", str(tmp_path / "r.html"))
    assert r.returncode == 0, r.stderr
    assert "pruned 25.0%" in r.stdout and "cosine mean" in r.stdout
    assert (tmp_path / "o.tslim").stat().st_size > 0 and "<html" in (tmp_path / "r.html").read_text().lower()
