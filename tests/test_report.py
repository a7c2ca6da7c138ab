"""The --report page: one self-contained HTML file, rendered in headless Chromium without console errors."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from models import mlp_model
from tensorslim.api import quantize
from tensorslim.backends.onnx import save_model
from tensorslim.benchmark import benchmark_models
from tensorslim.report import ModelRow, ReportData, render_html, report_data, write_report
from tensorslim.report.svg import pareto_front

CHROMIUM = next((shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)
CONSOLE_ERRORS = re.compile(r"Uncaught|ERROR:CONSOLE|Failed to load resource|:CONSOLE\(\d+\)\] \"(?:Error|TypeError)")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("report")
    model, feeds = mlp_model()
    src = save_model(model, tmp / "mlp.onnx")
    quantize(src, tmp / "mlp.int8.onnx")
    labels = np.argmax(np.random.default_rng(1).standard_normal((16, 10)), axis=1)
    np.savez(tmp / "data.npz", x=feeds["x"], label=labels)
    return src, tmp / "mlp.int8.onnx", tmp / "data.npz"


def assert_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page.lower()
    assert not re.search(r"""\b(src|href)\s*=""", page), "nothing may be fetched"
    assert not re.search(r"url\(|@import", page)
    # the only URL is the SVG namespace, an identifier that is never fetched
    assert set(re.findall(r"https?://[^\s\"'<]+", page)) <= {"http://www.w3.org/2000/svg"}


def test_pareto_front() -> None:
    pts = [(1.0, 10.0), (2.0, 5.0), (3.0, 6.0), (0.5, 20.0)]
    assert pareto_front(pts) == [3, 0, 1]
    assert pareto_front([(1.0, 0.9), (2.0, 0.95), (3.0, 0.8)], maximize_y=True) == [0, 1]


def test_bench_report_has_every_section(models: tuple[Path, Path, Path], tmp_path: Path) -> None:
    src, q, _ = models
    bench = benchmark_models([src, q], max_time_s=0.2, min_runs=20, measure_memory=False)
    out = write_report(tmp_path / "r.html", bench=bench, layers_of=(src, q, None), title="bench <test>")
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "bench &lt;test&gt;" in page
    for section in (
        "Comparison",
        "Size, latency, accuracy",
        "Latency distributions",
        "Per-layer error",
        "Weights of the worst layers",
        "Reproduce",
        "onnxruntime",
    ):
        assert section in page, section
    assert page.count("<svg") >= 5
    assert f"[{bench.models[1].p50_ci_low_ms:.3f}, {bench.models[1].p50_ci_high_ms:.3f}]" in page


def test_rows_without_latency_still_render() -> None:
    page = render_html(ReportData(title="t", rows=[ModelRow("a", size_bytes=10), ModelRow("b", accuracy=0.5)]))
    assert_self_contained(page)
    assert "Latency distributions" not in page and "50.00%" in page


@pytest.mark.parametrize("command", ["bench", "eval", "quantize"])
def test_cli_report_option(command: str, models: tuple[Path, Path, Path], tmp_path: Path) -> None:
    src, q, data = models
    html = tmp_path / f"{command}.html"
    args = {
        "bench": ["bench", str(src), str(q), "--seconds", "0.2", "--no-memory"],
        "eval": ["eval", str(src), str(q), "--data", str(data)],
        "quantize": ["quantize", str(src), "-o", str(tmp_path / "q2.onnx"), "--no-check-speed"],
    }[command]
    r = subprocess.run(
        [sys.executable, "-m", "tensorslim.cli", *args, "--report", str(html)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    page = html.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert f"tensorslim {command}" in page
    if command != "bench":
        assert "Per-layer error" in page


def chromium(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--enable-logging=stderr",
                "--v=0",
                *extra,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(models: tuple[Path, Path, Path], tmp_path: Path) -> None:
    src, q, data = models
    bench = benchmark_models([src, q], max_time_s=0.2, min_runs=20, measure_memory=False)
    page = write_report(tmp_path / "r.html", bench=bench, layers_of=(src, q, data), title="chromium check")
    dom = chromium(page.as_uri(), "--dump-dom")
    assert "chromium check" in dom.stdout and dom.stdout.count("<svg") >= 5, dom.stderr[-2000:]
    assert not CONSOLE_ERRORS.search(dom.stderr), dom.stderr[-2000:]
    shot = tmp_path / "shot.png"
    r = chromium(page.as_uri(), f"--screenshot={shot}", "--window-size=1200,1600", "--hide-scrollbars")
    assert shot.is_file() and shot.stat().st_size > 20_000, r.stderr[-2000:]
    assert not CONSOLE_ERRORS.search(r.stderr)
    # the check can fail: a page with a script error is caught
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>undefinedFunction()</script></body></html>")
    assert CONSOLE_ERRORS.search(chromium(bad.as_uri(), "--dump-dom").stderr)


def test_cold_load_time_is_recorded_and_shown(models: tuple[Path, Path, Path], tmp_path: Path) -> None:
    src, _, _ = models
    bench = benchmark_models([src], max_time_s=0.05, min_runs=5)
    mem = bench.models[0].memory
    assert mem is not None and mem.cold_load_ms is not None and mem.cold_load_ms > 0
    assert bench.to_dict()["models"][0]["memory"]["cold_load_ms"] == mem.cold_load_ms
    page = render_html(report_data(bench=bench))
    assert "cold load ms" in page and f"{mem.cold_load_ms:.1f}" in page
