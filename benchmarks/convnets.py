"""Full-size conv nets beyond RapidOCR: float vs tensorslim static int8 (its default) vs ONNX Runtime's QOperator u8.

MobileNetV3-Large (HardSwish, squeeze-excite with HardSigmoid), EfficientNet-B0 (SiLU, squeeze-excite with Sigmoid)
and ResNet-18 (ReLU), from torchvision's layer tables (``zoo_nets``), random weights, exported to ONNX at
224 x 224 with a free batch axis, their BatchNorm statistics taken from 32 images (with random statistics the
signal fades layer by layer and every image gets nearly the same logits). Images: smooth random fields (noise at 4 scales, upsampled), ImageNet-normalized;
64 calibrate, 100 others are scored. Variants:

* tensorslim static: ``tensorslim.quantize(..., config=StaticQuantConfig())``, the default static mode, whose own
  latency check times it against float on this machine and moves regions back to float where int8 is slower;
* ORT QOperator u8: ``quant_pre_process``, then ``quantize_static(QOperator, per channel, uint8)`` on the same
  calibration images (``ort_qoperator.py``).

Per variant: output cosine against float on the scored images (mean and worst), each output less float's mean
output over the images (random weights give every image nearly the same logits: a plain cosine reads 0.9999 for
any variant, and top-1 agreement says little), and latency at batch 1 over float's, every variant timed in this process by
tensorslim's harness (``benchmark_models``), interleaved round robin, with the ratio's 95 % interval. Run it on a
quiet machine: timing shares the cores with nothing else, and the harness says when the machine was busy.

``--quick`` (CI): 96 x 96, 16 calibration and 16 scored images, short timing. Exit 1 when a variant fails, or
tensorslim static is slower than float beyond noise or its mean cosine is more than 0.02 below the QOperator
model's. These nets' random weights (BatchNorm statistics from images) make them sensitive: 1 % input noise
moves MobileNetV3-Large's output to a cosine of 0.97, so the cosines here compare the two int8 paths, not what a
trained net would keep.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = ("mobilenet_v3_large", "efficientnet_b0", "resnet18")
# from transformers' configs (random weights, its own initialization; nothing downloaded): ``--models`` names them
HF_MODELS: dict[str, tuple[str, str, str, dict[str, Any]]] = {  # name: (config, model class, output field, config)
    "convnext_tiny": ("ConvNextConfig", "ConvNextModel", "pooler_output",
                      {"hidden_sizes": [96, 192, 384, 768], "depths": [3, 3, 9, 3]}),
    "vit_small": ("ViTConfig", "ViTModel", "pooler_output",
                  {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536,
                   "patch_size": 16}),
    "segformer_b0": ("SegformerConfig", "SegformerModel", "last_hidden_state", {}),
    "resnet50_hf": ("ResNetConfig", "ResNetModel", "pooler_output", {}),
}  # fmt: skip
MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


def images(n: int, size: int, seed: int) -> np.ndarray:
    """``[n, 3, size, size]`` float32: smooth random images in [0, 1] (noise at 4 scales), ImageNet-normalized."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 3, size, size), np.float32)
    for cells in (2, 4, 8, 16):
        coarse = rng.random((n, 3, cells, cells)).astype(np.float32)
        rep = -(-size // cells)
        out += np.repeat(np.repeat(coarse, rep, axis=2), rep, axis=3)[:, :, :size, :size] / 4
    return (out - MEAN) / STD


def _hf_net(name: str, size: int) -> Any:
    import torch
    import transformers

    config_cls, model_cls, field, kw = HF_MODELS[name]
    config = getattr(transformers, config_cls)(**kw, **({"image_size": size} if config_cls == "ViTConfig" else {}))
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(config).eval()

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return getattr(self.model(pixel_values=x), field).flatten(1)

    return Net().eval()


def export(name: str, size: int, dst: Path) -> Path:
    import torch

    import zoo_nets

    net = _hf_net(name, size) if name in HF_MODELS else getattr(zoo_nets, name)()
    bn = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bn:  # statistics of the images the net will see, so that every layer's output depends on the image
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batch
    net.train()
    with torch.no_grad():
        net(torch.from_numpy(images(32, size, seed=0)))
    net.eval()
    torch.onnx.export(net, (torch.zeros(1, 3, size, size),), str(dst), input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}}, opset_version=17, dynamo=False)  # fmt: skip
    return dst


def outputs(path: Path, x: np.ndarray, threads: int) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"image": x[i : i + 8]})[0] for i in range(0, len(x), 8)])


def cosines(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Per image, the cosine of the two outputs less float's mean output over the images: random weights give every
    image nearly the same logits, which a plain cosine would credit to any variant."""
    centre = ref.mean(axis=0, keepdims=True)
    ref, got = ref - centre, got - centre
    num = np.sum(ref * got, axis=1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    return num / np.maximum(den, 1e-12)


def run_model(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import tensorslim as ts
    from ort_qoperator import quantize_qoperator_u8
    from tensorslim.benchmark import benchmark_models
    from tensorslim.benchmark.table import busy_note
    from tensorslim.passes.static_quant import StaticQuantConfig

    src = export(name, args.size, work / f"{name}.onnx")
    calib, scored = images(args.calib, args.size, seed=1), images(args.scored, args.size, seed=2)
    row: dict[str, Any] = {"model": name, "size": args.size, "variants": {}}
    paths = {"float": src}
    t = time.perf_counter()
    res = ts.quantize(src, work / f"{name}-static.onnx", config=StaticQuantConfig(), data={"image": calib})
    paths["tensorslim static"] = work / f"{name}-static.onnx"
    row["variants"]["tensorslim static"] = {
        "tool_s": time.perf_counter() - t,
        "notes": [n for n in res.notes if n.startswith(("latency check", "placement"))],
    }
    ref = outputs(src, scored, args.threads)
    cos = cosines(ref, outputs(paths["tensorslim static"], scored, args.threads))
    row["variants"]["tensorslim static"].update(cos_mean=float(cos.mean()), cos_min=float(cos.min()))
    t = time.perf_counter()
    qop = row["variants"]["ORT QOperator u8"] = {"notes": []}
    try:  # ORT's quantizer can fail, or write a model ONNX Runtime will not load: that is its row's result
        quantize_qoperator_u8(src, work / f"{name}-qop.onnx", {"image": calib})
        cos = cosines(ref, outputs(work / f"{name}-qop.onnx", scored, args.threads))
        qop.update(cos_mean=float(cos.mean()), cos_min=float(cos.min()))
        paths["ORT QOperator u8"] = work / f"{name}-qop.onnx"
    except Exception as e:
        qop["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    qop["tool_s"] = time.perf_counter() - t
    rep = benchmark_models([str(p) for p in paths.values()], threads=args.threads, inputs={"image": scored[:1]},
                           min_runs=args.runs, max_time_s=args.budget_s / len(paths), measure_memory=False,
                           load_repeats=1)  # fmt: skip
    row["float_ms"] = rep.models[0].p50_ms
    row["busy"] = busy_note(rep)
    for v, m in zip(list(paths)[1:], rep.models[1:], strict=True):  # a variant that failed was not timed
        row["variants"][v].update(ratio=m.p50_ratio, ratio_ci=m.p50_ratio_ci,
                                  size_x=paths[v].stat().st_size / src.stat().st_size)  # fmt: skip
    return row


def render(rows: list[dict[str, Any]], threads: int) -> str:
    lines = [f"| model ({rows[0]['size']}x{rows[0]['size']}, float b1 ms) | variant | size x | b1 x [95% CI] | cos mean |"
             " cos min | tool s |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        for v, d in r["variants"].items():
            if "error" in d:
                lines.append(f"| {r['model']} ({r['float_ms']:.1f}) | {v} | failed: {d['error']} | | | | "
                             f"{d['tool_s']:.0f} |")
                continue
            ci = d.get("ratio_ci")
            ratio = "-" if d.get("ratio") is None else f"{d['ratio']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
            lines.append(f"| {r['model']} ({r['float_ms']:.1f}) | {v} | {d.get('size_x', 0):.3f} | {ratio} | "
                         f"{d.get('cos_mean', float('nan')):.4f} | {d.get('cos_min', float('nan')):.4f} | "
                         f"{d['tool_s']:.0f} |")  # fmt: skip
    lines.append(f"\n{threads} thread(s), batch 1, every variant of a model timed interleaved in one process.")
    lines.extend(f"{r['model']}: {r['busy']}" for r in rows if r["busy"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="96x96, 16 images, short timing (CI)")
    ap.add_argument("--models", default=",".join(MODELS),
                    help="comma-separated, from " + ", ".join((*MODELS, *HF_MODELS)))  # fmt: skip
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)
    args.size, args.calib, args.scored = (96, 16, 16) if args.quick else (224, 64, 100)
    args.runs, args.budget_s = (10, 3.0) if args.quick else (40, 60.0)
    rows, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            try:
                rows.append(run_model(name, args, Path(tmp)))
            except Exception as e:  # a benchmark row, not a crash: the table says which failed
                failed.append(f"{name}: {type(e).__name__}: {e}")
                continue
            print(name, json.dumps(rows[-1]["variants"], default=str)[:600], flush=True)
    if rows:
        print(render(rows, args.threads))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    for f in failed:
        print("FAILED", f)
    low = [r["model"] for r in rows if _behind(r["variants"]["tensorslim static"], r["variants"]["ORT QOperator u8"])]
    if low:
        print("tensorslim static slower than float, or less accurate than ORT's QOperator model:", ", ".join(low))
    return 1 if failed or low else 0


def _behind(ours: dict[str, Any], ort: dict[str, Any]) -> bool:
    """Slower than float beyond noise (the interval's low end over 1.03), or a mean cosine 0.02 below ORT's (when
    ORT's model ran)."""
    ci = ours.get("ratio_ci") or (ours.get("ratio", 1.0),) * 2
    return bool(ci[0] > 1.03 or ours.get("cos_mean", 0.0) < ort.get("cos_mean", -1.0) - 0.02)


if __name__ == "__main__":
    sys.exit(main())
