"""``tensorslim quantize``: ONNX and ``.tflite`` models, every ``--mode``, the weights table and a speed check."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from tensorslim.commands._kit import EXIT_OK, command, console, err_console, warn, write_json
from tensorslim.commands._options import (
    BatchAxisOption,
    JsonOption,
    ReportOption,
    ShowAllOption,
    TargetRuntimeOption,
    data_option,
    output_option,
)
from tensorslim.commands._tables import mb, weights_table
from tensorslim.errors import ConfigError, InputError
from tensorslim.modes import ONNX_MODES, TFLITE_MODES, mode_help
from tensorslim.runtime.targets import target_for

__all__ = ["quantize"]

#: ``--ops``: an allow-list in every mode (fp16 included since issue 17).
_OPS_HELP = (
    "Comma-separated op types to quantize, e.g. MatMul,Gemm,Conv (fp16: the op types converted to float16, the "
    "others stay float32)."
)


def _floats(flag: str, text: str | None) -> tuple[float, ...]:
    if text is None:
        return ()
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"{flag}: {text!r} is not a comma-separated list of numbers, e.g. 0.485,0.456,0.406") from None


def _image_preprocess(
    size: str | None, *, layout: str, color: str, resize: str, scale: float, mean: str | None, std: str | None
) -> Any:
    """The ``ImagePreprocess`` the image flags declare, or ``None`` when ``--image-size`` is not given."""
    if size is None:
        if mean is not None or std is not None:
            raise InputError("--mean/--std describe image data: add --image-size SIZE and --data IMAGE_FOLDER")
        return None
    from tensorslim.data.images import ImagePreprocess

    h, sep, w = size.lower().partition("x")
    if not (h.strip().isdigit() and (not sep or w.strip().isdigit())):
        raise InputError(f"--image-size: {size!r} is not SIZE or HxW, e.g. 224 or 224x256")
    try:
        return ImagePreprocess(
            size=(int(h), int(w) if sep else int(h)), resize=resize, layout=layout.upper(), color=color.upper(),
            scale=scale, mean=_floats("--mean", mean), std=_floats("--std", std),
        )  # fmt: skip
    except ConfigError as e:
        raise InputError(f"--{e}") from None


def _image_data(model_in: Path, data_in: Any, images: Any, max_samples: int | None) -> Any:
    """The image folder ``--data`` names, preprocessed into a dataset for the model."""
    from tensorslim.api import load_calibration
    from tensorslim.backends.onnx.io import load_model

    if data_in is None or not Path(data_in).is_dir():
        raise InputError("--image-size: give the image folder with --data FOLDER")
    return load_calibration(data_in, load_model(model_in), max_samples=max_samples, images=images)


def _split_ops(ops: str | None) -> tuple[str, ...] | None:
    if ops is None:
        return None
    return tuple(o.strip() for o in ops.split(",") if o.strip())



@command("quantize", """
    tensorslim quantize model.onnx -o model.int8.onnx
    tensorslim quantize model.onnx -o model.int8.onnx --form weight_only --granularity per_tensor
    tensorslim quantize model.onnx -o q.onnx --ops MatMul,Gemm --exclude 'classifier' --json report.json
    tensorslim quantize model.tflite -o model.int8.tflite [--mode dynamic|fp16|static --data calib.npz]
    tensorslim quantize model.pt -o model.int8.onnx --input-shape x=1x3x32x32   # TorchScript or torch.export
    tensorslim quantize hf_model_dir/ -o q.onnx --mode int4 --data sentences.txt  # Hugging Face folder
""")
def quantize(
    model: Annotated[Path, typer.Argument(help="Float ONNX or TFLite model to quantize (never modified).")],
    output: Annotated[Path, output_option("Where to write the quantized model.")],
    mode: Annotated[str, typer.Option(help=mode_help())] = "dynamic",
    form: Annotated[
        str,
        typer.Option(
            help="auto (fastest per op), integer (integer kernels; .tflite: hybrid), weight_only (float compute)."
        ),
    ] = "auto",
    scheme: Annotated[
        str | None,
        typer.Option(help="symmetric or asymmetric [default: symmetric; int4/blockwise: asymmetric]."),
    ] = None,
    granularity: Annotated[str, typer.Option(help="per_channel or per_tensor scales.")] = "per_channel",
    range_method: Annotated[
        str | None,
        typer.Option(
            "--range",
            help="dynamic: mse (MSE-optimal clipping per channel) or minmax [default: mse; .tflite: minmax]; "
            "static: auto (min/max, percentile or MSE ranges, whichever keeps the int8 outputs closest to float on "
            "the calibration data) [default], minmax, moving_average, percentile, mse or entropy.",
        ),
    ] = None,
    ops: Annotated[str | None, typer.Option(help=_OPS_HELP)] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Regex on node names to keep in float (repeatable).")
    ] = None,
    min_size: Annotated[
        int | None, typer.Option(help="Weights with fewer elements stay float [default: 256; .tflite: 1024].")
    ] = None,
    weight_encoding: Annotated[
        str,
        typer.Option(help="Weight-only dequantization: auto, cast (folded at load) or dequantize_linear."),
    ] = "auto",
    data: Annotated[
        Path | None,
        data_option(
            "Calibration data for int4 GPTQ, the fp16 overflow check and static: ",
            " Also a folder of images (with --image-size) or a text file (with --tokenizer).",
        ),
    ] = None,
    batch_axis: BatchAxisOption = None,
    max_samples: Annotated[int | None, typer.Option(help="Use at most this many calibration samples.")] = None,
    image_size: Annotated[
        str | None, typer.Option(help="--data is a folder of images: resize to SIZE or HxW (e.g. 224 or 224x256).")
    ] = None,
    layout: Annotated[str, typer.Option(help="Images: NCHW (channels first) or NHWC (channels last).")] = "NCHW",
    color: Annotated[str, typer.Option(help="Images: RGB, BGR or L (grey).")] = "RGB",
    resize: Annotated[
        str,
        typer.Option(
            help="Images: stretch, center_crop (keep aspect ratio, crop), or pad (keep aspect ratio, fit inside, "
            "zeros of the normalized input right and below, as OCR recognizers batch text lines)."
        ),
    ] = "stretch",
    scale: Annotated[float, typer.Option(help="Images: pixel values (0-255) are multiplied by this first.")] = 1 / 255,
    mean: Annotated[
        str | None, typer.Option(help="Images: per-channel mean subtracted after --scale, e.g. 0.485,0.456,0.406.")
    ] = None,
    std: Annotated[
        str | None, typer.Option(help="Images: per-channel std divided by after --mean, e.g. 0.229,0.224,0.225.")
    ] = None,
    bits: Annotated[int, typer.Option(help="blockwise: 4 or 8 bits.")] = 4,
    block_size: Annotated[int, typer.Option(help="int4/blockwise: values per block (16-256, power of two).")] = 32,
    method: Annotated[
        str, typer.Option(help="int4/blockwise: auto (gptq with --data, else mse), gptq, mse or minmax.")
    ] = "auto",
    accuracy_level: Annotated[
        int, typer.Option(help="int4/blockwise: MatMulNBits accuracy_level (4 = int8 compute, 0 = float).")
    ] = 4,
    kernel: Annotated[
        str,
        typer.Option(help="int4/blockwise MatMul kernel: integer (4-bit blocks rebuilt as int8 at load, int8 "
                     "kernels: fast on CPU), matmulnbits (weight-only MatMulNBits), or auto (integer for 4 bits)."),
    ] = "auto",
    io: Annotated[
        str,
        typer.Option(help="static: float model inputs/outputs, or integer ones: int8 (.tflite; ONNX with --scheme "
                     "symmetric) or uint8 (ONNX, asymmetric); scales in the model metadata."),
    ] = "float",
    activation_bits: Annotated[
        int, typer.Option(help="ONNX static: 8, or 16 for every activation (A16W8: int8 weights).")
    ] = 8,
    int16_nodes: Annotated[
        list[str] | None, typer.Option(help="ONNX static: regex on node names whose activations get 16 bits.")
    ] = None,
    smooth_quant: Annotated[
        float | None, typer.Option(help="ONNX static: SmoothQuant alpha in (0, 1), e.g. 0.5, for MatMul/Gemm.")
    ] = None,
    bias_correction: Annotated[
        bool, typer.Option(help="ONNX static: fold the expected int8 weight error into the biases.")
    ] = False,
    equalize: Annotated[
        bool, typer.Option(help="ONNX static: cross-layer equalization of Conv pairs first (CNNs).")
    ] = False,
    equalize_activations: Annotated[
        bool,
        typer.Option(help="ONNX static, per-channel weights: raise the narrow channels of each activation that "
                     "feeds a depthwise Conv toward the widest (the Convs on either side rescaled: same function, "
                     "same weight rounding)."),
    ] = True,
    placement: Annotated[
        Path | None,
        typer.Option(help="ONNX static: replay the int8/float placement recorded in a model tensorslim made (or a "
                     "JSON file) instead of deciding it: the same bytes on any machine."),
    ] = None,
    learned_rounding: Annotated[
        bool,
        typer.Option(help="ONNX static: round each weight up or down to minimise its layer's output error on the "
                     "calibration data (AdaRound's objective) instead of to nearest; slower."),
    ] = False,
    empirical_bias: Annotated[
        bool,
        typer.Option(help="ONNX static: shift each int8 Conv/Gemm's bias so its mean output per channel matches "
                     "float's on calibration samples, layer by layer."),
    ] = True,
    empirical_gain: Annotated[
        bool,
        typer.Option(help="ONNX static, with --empirical-bias: also scale each channel of the int8 Convs by the "
                     "gain onto float's output where it is clear of sampling noise, if the model's output on "
                     "held-out calibration samples is no worse with it (within 0.8-1.25, in the weight scales: "
                     "free at run time)."),
    ] = True,
    keep_weight_sums: Annotated[
        bool,
        typer.Option(help="ONNX static: round each output channel's weights so their sum stays float's (its "
                     "response to a flat input: paper, sky, padding) instead of each to nearest; try it where "
                     "flat regions read wrong (spaces, background detections)."),
    ] = False,
    latency_check: Annotated[
        bool,
        typer.Option(help="ONNX static: time the result against float here and move int8 regions back to float "
                     "until it is not slower (recorded in the output's metadata)."),
    ] = True,
    latency_batch: Annotated[
        int | None,
        typer.Option(help="ONNX static: the batch you serve; the latency check times it besides batch 1 (1: batch 1 "
                     "only) [default: as many calibration samples as run in ~0.25 s of float time, up to 32]."),
    ] = None,
    input_shape: Annotated[
        list[str] | None, typer.Option(help="PyTorch file: example input NAME=1x3x32x32[:dtype] (repeatable).")
    ] = None,
    tokenizer: Annotated[
        Path | None, typer.Option(help="Hugging Face tokenizer folder: --data sentences.txt becomes token feeds.")
    ] = None,
    json_out: JsonOption = None,
    show_all: ShowAllOption = False,
    check_speed: Annotated[
        bool, typer.Option(help="Time the result against the input and warn if it is slower.")
    ] = True,
    report_html: ReportOption = None,
    target_runtime: TargetRuntimeOption = None,
) -> int:
    """Quantize a float ONNX model (dynamic-range int8: ~4x smaller weights, no calibration data)."""

    from tensorslim.api import quantize as run_quantize
    from tensorslim.backends.tflite.io import is_tflite
    from tensorslim.frontends.inputs import resolve_cli_input

    model_in, data_in, front_notes = resolve_cli_input(model, output, data, tokenizer, input_shape or [], mode)
    images = _image_preprocess(
        image_size, layout=layout, color=color, resize=resize, scale=scale, mean=mean, std=std
    )
    if images is not None:
        if is_tflite(model):
            raise InputError("--image-size: image folders calibrate ONNX models; save them as .npz for .tflite")
        data_in = _image_data(model_in, data_in, images, max_samples)
    target = target_for(target_runtime, model_kind="tflite" if is_tflite(model) else "onnx")
    if is_tflite(model):
        if target is not None and json_out != "-":
            console.print(f"note: --target-runtime {target}: LiteRT versions are not checked yet (ONNX only)")

        if (scheme or "symmetric", weight_encoding) != ("symmetric", "auto"):
            raise InputError("--scheme and --weight-encoding apply to ONNX models; drop them for .tflite")
        if (activation_bits, int16_nodes, smooth_quant, bias_correction, equalize, placement) != (
            8, None, None, False, False, None
        ):
            raise InputError(
                "--activation-bits, --int16-nodes, --smooth-quant, --bias-correction, --equalize and --placement "
                "apply to ONNX models; drop them for .tflite"
            )
        return _quantize_tflite(
            model, output, mode=mode, form=form, data=data, granularity=granularity, range_method=range_method,
            exclude=exclude or (), min_size=min_size, ops=_split_ops(ops), io=io, json_out=json_out,
            show_all=show_all, check_speed=check_speed,
        )  # fmt: skip
    cfg = _onnx_config(
        mode, form=form, scheme=scheme, granularity=granularity, range_method=range_method, ops=_split_ops(ops),
        exclude=tuple(exclude or ()), min_size=min_size, weight_encoding=weight_encoding, bits=bits,
        block_size=block_size, method=method, accuracy_level=accuracy_level, kernel=kernel,
        data=None if data_in is None else data,
        static_options={"io_dtype": io, "activation_bits": activation_bits, "int16_nodes": tuple(int16_nodes or ()),
                        "smooth_quant": smooth_quant, "bias_correction": bias_correction, "equalize": equalize,
                        "equalize_activations": equalize_activations,
                        "placement": None if placement is None else str(placement),
                        "latency_check": latency_check, "latency_batch": latency_batch,
                        "learned_rounding": learned_rounding, "empirical_bias": empirical_bias,
                        "empirical_gain": empirical_gain, "keep_weight_sums": keep_weight_sums},
    )  # fmt: skip
    result = _own_weights(run_quantize(model_in, output, config=cfg, data=data_in, max_samples=max_samples,
                                       target_runtime=target), model_in)  # fmt: skip
    quiet = json_out == "-"
    if not quiet:
        console.print(weights_table(result.records, 0 if show_all else 25))
        s = result.summary()
        console.print(
            f"quantized {s['quantized']} of {s['weights']} weights: {mb(s['bytes_before'])} MB -> "
            f"{mb(s['bytes_after'])} MB; model {mb(result.input_bytes)} MB -> {mb(result.output_bytes)} MB "
            f"({result.size_ratio:.3f}x) in {result.seconds:.1f} s"
        )
        for note in [*front_notes, *result.notes]:
            console.print(f"note: {note}")
        console.print(f"wrote {result.output_path}")
    payload = result.to_dict()
    if check_speed:
        payload["speed_check"] = _speed_check(model_in, output, quiet=quiet, mode=mode, data=data_in)
    if report_html is not None:
        from tensorslim.report import write_report

        write_report(
            report_html,
            quantize=result,
            quantize_input=model_in,
            speed_check=payload.get("speed_check"),
            layers_of=(model_in, output, None),
            title=f"tensorslim quantize {Path(model_in).name}",
        )
    write_json(json_out, payload)
    return EXIT_OK


def _weight_names(graph: Any) -> set[str]:
    """Names of the constant tensors of ``graph`` and its subgraphs (initializers and ``Constant`` outputs)."""
    import onnx

    names = {t.name for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            names.update(n.output)
        for a in n.attribute:
            subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
            for g in subs:
                names |= _weight_names(g)
    return names


def _own_weights(result: Any, model_in: Path) -> Any:
    """``result`` with records of the input model's own weights only: a static pass also reports the scale and
    zero-point constants it adds, which are not weights of the model ("quantized N of M weights")."""
    import dataclasses

    from tensorslim.backends.onnx.io import load_model

    own = _weight_names(load_model(model_in, check=False, external_data=False).graph)
    return dataclasses.replace(result, records=[r for r in result.records if r.name in own])


def _onnx_config(
    mode: str,
    *,
    form: str,
    scheme: str | None,
    granularity: str,
    range_method: str | None,
    ops: tuple[str, ...] | None,
    exclude: tuple[str, ...],
    min_size: int | None,
    weight_encoding: str,
    bits: int,
    block_size: int,
    method: str,
    accuracy_level: int,
    data: Path | None,
    kernel: str = "auto",
    static_options: dict[str, Any] | None = None,
) -> Any:
    """The pass config for an ONNX ``--mode``, with option errors turned into one-line input errors."""
    from tensorslim.passes.blockwise_quant import BlockQuantConfig
    from tensorslim.passes.dynamic_quant import SUPPORTED_OPS, DynamicQuantConfig
    from tensorslim.passes.float16 import FLOAT16_OPS, Float16Config
    from tensorslim.passes.static_quant import StaticQuantConfig

    if mode not in ONNX_MODES:
        raise InputError(f"--mode: {mode!r} is not one of {', '.join(ONNX_MODES)}")
    static_opts = dict(static_options or {})
    if mode != "static":
        defaults = {"io_dtype": "float", "activation_bits": 8, "int16_nodes": (), "smooth_quant": None,
                    "bias_correction": False, "equalize": False, "equalize_activations": True, "placement": None,
                    "latency_check": True, "latency_batch": None, "learned_rounding": False, "empirical_bias": True,
                    "empirical_gain": True, "keep_weight_sums": False}  # fmt: skip
        extra = [k for k, v in static_opts.items() if defaults.get(k, v) != v]
        if extra:
            flags = ", ".join("--" + {"io_dtype": "io"}.get(k, k).replace("_", "-") for k in extra)
            raise InputError(f"{flags}: only for --mode static; drop them or use --mode static")
    try:
        if mode == "dynamic":
            if data is not None:
                raise InputError("--data: dynamic mode needs no calibration data; drop --data or use --mode int4")
            if ops is not None:
                unknown = [o for o in ops if o not in SUPPORTED_OPS]
                if unknown or not ops:
                    raise InputError(
                        f"--ops: unknown op {', '.join(map(repr, unknown)) or '(empty)'}; "
                        f"allowed: {', '.join(SUPPORTED_OPS)}"
                    )
            return DynamicQuantConfig(
                form=form, scheme=scheme or "symmetric", granularity=granularity, range_method=range_method or "mse",
                exclude=exclude, min_size=256 if min_size is None else min_size, weight_encoding=weight_encoding,
                **({"op_types": ops} if ops is not None else {}),  # type: ignore[arg-type]
            )  # fmt: skip
        if mode in ("int4", "blockwise"):
            return BlockQuantConfig(
                bits=4 if mode == "int4" else bits, block_size=block_size, scheme=scheme or "asymmetric",
                method=method, accuracy_level=accuracy_level, kernel=kernel, exclude=exclude,
                min_size=1024 if min_size is None else min_size,
                **({"op_types": ops} if ops is not None else {}),  # type: ignore[arg-type]
            )  # fmt: skip
        if mode == "static":
            if data is None:
                raise InputError("--mode static needs calibration data: pass --data CALIB.npz (a few hundred samples)")
            return StaticQuantConfig(
                activation_scheme=scheme or "asymmetric", granularity=granularity,
                calibration=range_method or "auto", exclude=exclude, **static_opts,
                **({"op_types": ops} if ops is not None else {}),  # type: ignore[arg-type]
            )  # fmt: skip
        if ops is not None:  # an allow-list as in every mode: the other float16-capable op types stay float32
            unknown = [o for o in ops if o not in FLOAT16_OPS]
            if unknown or not ops:
                raise InputError(
                    f"--ops: {', '.join(map(repr, unknown)) or '(empty)'} is not an op type fp16 converts; "
                    f"allowed: {', '.join(FLOAT16_OPS)}"
                )
            return Float16Config(block_ops=tuple(o for o in FLOAT16_OPS if o not in ops), block_nodes=exclude)
        return Float16Config(block_nodes=exclude)
    except ConfigError as e:
        flag_of = {"io_dtype": "io", "activation_scheme": "scheme", "calibration": "range", "range_method": "range"}
        field, sep, rest = str(e).partition(":")  # name the command-line flag, not the config field
        raise InputError(f"--{flag_of.get(field, field).replace('_', '-')}{sep}{rest}") from None


_SLOW_HINTS = {
    "dynamic": "Try --form weight_only (float speed, same size) or check with tensorslim bench.",
    "int4": "On small layers the run-time quantization of activations costs more than the int8 kernel saves; "
    "try --kernel matmulnbits (weight-only), or check with tensorslim bench.",
}


def _speed_check(
    reference: Path, candidate: Path, *, quiet: bool, mode: str = "dynamic", data: Any = None
) -> dict[str, Any]:
    """A short side-by-side timing on the first sample of ``data`` (the calibration data, when given; generated
    inputs otherwise); warns when the candidate is slower than the reference, or when generated inputs left
    dims the model does not size at 1."""
    from tensorslim.benchmark import benchmark_models
    from tensorslim.benchmark.table import shape_note

    inputs, source = _first_sample(reference, data), "calibration sample"
    if inputs is None:
        source = "generated inputs"
    try:
        rep = benchmark_models([reference, candidate], threads=0, max_time_s=1.5, min_runs=10, measure_memory=False,
                               inputs=inputs)  # fmt: skip
    except ValueError as e:
        if not quiet:  # the model is written; say that its speed is unchecked and how to check it
            warn(f"speed check: not timed ({e}); time it with tensorslim bench {reference} {candidate} --data DATA.npz")
        return {"error": str(e)}
    from tensorslim.benchmark.verdict import speed_verdict

    ref, cand = rep.models[0], rep.models[1]
    v = speed_verdict(rep)
    ratio, slower = v.ratio, v.kind == "slower"
    findings = _doctor_findings(candidate) if slower else []
    shapes = "; ".join(f"{k} {'x'.join(map(str, d))}" for k, d in (rep.settings.get("input_shapes") or {}).items())
    if not quiet:
        if v.warn:
            msg = v.message("on this CPU", ref.p50_ms, cand.p50_ms, f"tensorslim bench {reference} {candidate}")
            warn(f"{msg} Timed on {source}: {shapes}." + (" " + _SLOW_HINTS.get(mode, "") if slower else ""))
            for f in findings:
                err_console.print(f"  doctor: {f['code']}: {f['message']}\n    fix: {f['fix']}", soft_wrap=True)
        else:
            console.print(f"speed check: p50 {ref.p50_ms:.3f} ms -> {cand.p50_ms:.3f} ms ({ratio:.2f}x, {source}: "
                          f"{shapes})")  # fmt: skip
        note = shape_note(rep, command=f"tensorslim bench {reference} {candidate}")
        if note:
            warn(f"speed check: {note}")
    return {"reference_p50_ms": ref.p50_ms, "candidate_p50_ms": cand.p50_ms, "ratio": ratio, "slower": slower,
            "verdict": v.kind, "busy": v.busy, "doctor": findings, "inputs": source,
            "input_shapes": rep.settings.get("input_shapes"),
            "unsized_inputs": rep.settings.get("unsized_inputs")}  # fmt: skip


def _first_sample(model: Path, data: Any) -> dict[str, Any] | None:
    """The first sample of ``data`` (an ``.npz``, a folder, a loaded dataset) for ``model``, or ``None``."""
    if data is None:
        return None
    from tensorslim.benchmark.inputs import real_inputs

    try:
        return real_inputs(model, data)
    except (InputError, StopIteration, ValueError):  # quantizing read it: a sample that does not load is no worse
        return None  # than generated inputs for this advisory timing


def _doctor_findings(candidate: Path) -> list[dict[str, Any]]:
    """The doctor's static warnings (one session creation, no timing) for a model found slower."""
    from tensorslim.diagnostics.doctor import doctor

    try:
        return [{"code": f.code, "message": f.message, "fix": f.fix} for f in doctor(candidate, measure=False).warnings]
    except Exception:  # the pre-flight is advice; the speed check stands without it
        return []


def _tflite_config(mode: str, *, form: str, granularity: str, range_method: str | None, exclude: Sequence[str],
            min_size: int | None, ops: tuple[str, ...] | None, io: str) -> Any:  # fmt: skip
    from tensorslim.backends.tflite.dynamic import DYNAMIC_OPS, TfliteDynamicConfig
    from tensorslim.backends.tflite.fp16 import TfliteFloat16Config
    from tensorslim.backends.tflite.static import TfliteStaticConfig

    try:
        if mode == "dynamic":
            kwargs: dict[str, Any] = {"granularity": granularity, "exclude": tuple(exclude), "form": form}
            if range_method is not None:
                kwargs["range_method"] = range_method
            if min_size is not None:
                kwargs["min_size"] = min_size
            if ops is not None:
                unknown = [o for o in ops if o not in DYNAMIC_OPS]
                if unknown or not ops:
                    raise InputError(
                        f"--ops: unknown TFLite op {', '.join(map(repr, unknown)) or '(empty)'}; "
                        f"allowed: {', '.join(DYNAMIC_OPS)}"
                    )
                kwargs["op_types"] = ops
            return TfliteDynamicConfig(**kwargs)
        if mode == "int4":
            from tensorslim.backends.tflite.int4 import TfliteInt4Config

            kw: dict[str, Any] = {"exclude": tuple(exclude), "form": form}
            if range_method is not None:
                kw["range_method"] = range_method
            if min_size is not None:
                kw["min_size"] = min_size
            return TfliteInt4Config(**kw)
        if form != "auto":
            raise InputError(f"--form applies to --mode dynamic and int4; drop it for --mode {mode}")
        if mode == "fp16":
            return TfliteFloat16Config(exclude=tuple(exclude), min_size=min_size or 0)
        if mode == "static":
            return TfliteStaticConfig(io=io, granularity=granularity, weight_range=range_method or "minmax")
    except ConfigError as e:
        raise InputError(f"--{str(e).replace('_', '-', 1) if str(e).startswith('range') else e}") from None
    raise InputError(f"--mode: {mode!r} is not available for .tflite models; use {', '.join(TFLITE_MODES)}")


def _quantize_tflite(
    model: Path,
    output: Path,
    *,
    mode: str,
    form: str = "auto",
    data: Path | None,
    granularity: str,
    range_method: str | None,
    exclude: Sequence[str],
    min_size: int | None,
    ops: tuple[str, ...] | None,
    io: str,
    json_out: str | None,
    show_all: bool,
    check_speed: bool,
) -> int:
    """``tensorslim quantize model.tflite -o out.tflite``: quantize, report as for ONNX, optional speed check."""
    from tensorslim.backends.tflite.quantize import quantize_tflite

    cfg = _tflite_config(mode, form=form, granularity=granularity, range_method=range_method, exclude=exclude,
                  min_size=min_size, ops=ops, io=io)  # fmt: skip
    if data is not None and mode not in ("static", "int4"):
        raise InputError("--data is used by --mode static and int4 only (calibration); drop it or add --mode static")
    result = quantize_tflite(model, output, mode=mode, config=cfg, data=data)
    quiet = json_out == "-"
    if not quiet:
        console.print(weights_table(result.records, 0 if show_all else 25))
        for note in result.notes:
            console.print(f"note: {note}")
        s = result.summary()
        console.print(
            f"{mode}: quantized {s['quantized']} of {s['weights']} weights: {s['bytes_before'] / 1e6:.2f} MB -> "
            f"{s['bytes_after'] / 1e6:.2f} MB; model {result.input_bytes / 1e6:.2f} MB -> "
            f"{result.output_bytes / 1e6:.2f} MB ({result.size_ratio:.3f}x) in {result.seconds:.1f} s"
        )
        console.print(f"wrote {result.output_path}")
    payload = result.to_dict()
    if check_speed:
        payload["speed_check"] = _litert_speed_check(model, output, quiet=quiet)
    write_json(json_out, payload)
    return EXIT_OK


def _litert_speed_check(reference: Path, candidate: Path, *, quiet: bool) -> dict[str, Any]:
    from tensorslim.benchmark.litert import benchmark_litert
    from tensorslim.benchmark.verdict import speed_verdict

    rep = benchmark_litert([reference, candidate], threads=1, max_time_s=1.0, min_runs=10, load_repeats=1)
    ref, cand = rep.models
    v = speed_verdict(rep)
    if not quiet:
        if v.warn:
            rerun = f"tensorslim bench {reference} {candidate}"
            warn(v.message("in LiteRT", ref.p50_ms, cand.p50_ms, rerun))
        else:
            console.print(
                f"speed check (LiteRT): p50 {ref.p50_ms:.3f} ms -> {cand.p50_ms:.3f} ms ({v.ratio:.2f}x, batch 1)"
            )
    return {"reference_p50_ms": ref.p50_ms, "candidate_p50_ms": cand.p50_ms, "ratio": v.ratio,
            "slower": v.kind == "slower", "verdict": v.kind, "busy": v.busy}  # fmt: skip
