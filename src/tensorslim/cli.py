"""The ``tensorslim`` command line.

Exit codes: 0 success; 1 the job ran but a requested target was not reached; 2 bad input (missing or
corrupt file, bad option, bad data), with a one-line message naming the problem and the fix; 3 an
internal error (a tensorslim bug: rerun with ``--debug`` for the traceback and report it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tensorslim.clikit import (
    EXIT_OK,
    app,
    console,
    err_console,
    run_command,
    warn,
    write_json,
)
from tensorslim.commands.data_options import DATA_HELP, BatchAxisOption, with_batch_axes
from tensorslim.errors import InputError
from tensorslim.modes import ONNX_MODES, mode_help
from tensorslim.runtime.targets import TARGET_HELP, target_for

__all__ = ["app", "main"]


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f}"


def _weights_table(records: list[Any], limit: int) -> Table:
    table = Table(title="weights", title_justify="left", show_lines=False)
    for col in (
        "weight",
        "op",
        "shape",
        "action",
        "granularity",
        "SQNR dB",
        "bytes before",
        "bytes after",
        "note",
    ):
        table.add_column(col, overflow="fold")
    rows = sorted(records, key=lambda r: (r.skipped, -r.bytes_before))
    shown = rows[:limit] if limit > 0 else rows
    for r in shown:
        table.add_row(
            r.name,
            r.ops,
            "x".join(map(str, r.shape)),
            r.action,
            r.granularity,
            "" if r.sqnr_db is None else f"{r.sqnr_db:.1f}",
            f"{r.bytes_before:,}",
            f"{r.bytes_after:,}",
            r.reason if r.skipped else "",
        )
    if len(rows) > len(shown):
        table.caption = f"{len(rows) - len(shown)} more weight(s) not shown (--show-all lists every weight)"
    return table


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
    except ValueError as e:
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


@app.command(
    epilog="Examples:\n\n"
    "    tensorslim quantize model.onnx -o model.int8.onnx\n\n"
    "    tensorslim quantize model.onnx -o model.int8.onnx --form weight_only --granularity per_tensor\n\n"
    "    tensorslim quantize model.onnx -o q.onnx --ops MatMul,Gemm --exclude 'classifier' --json report.json\n\n"
    "    tensorslim quantize model.tflite -o model.int8.tflite [--mode dynamic|fp16|static --data calib.npz]\n\n"
    "    tensorslim quantize model.pt -o model.int8.onnx --input-shape x=1x3x32x32   # TorchScript or torch.export\n\n"
    "    tensorslim quantize hf_model_dir/ -o q.onnx --mode int4 --data sentences.txt  # Hugging Face folder\n\n"
    "Exit codes: 0 ok, 2 bad input, 3 internal error."
)
def quantize(
    model: Annotated[Path, typer.Argument(help="Float ONNX or TFLite model to quantize (never modified).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the quantized model.")],
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
            "static: minmax, moving_average, percentile, mse or entropy.",
        ),
    ] = None,
    ops: Annotated[
        str | None, typer.Option(help="Comma-separated op types to quantize, e.g. MatMul,Gemm,Conv.")
    ] = None,
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
        typer.Option(
            help="Calibration data for int4 GPTQ, the fp16 overflow check and static: " + DATA_HELP + " Also a folder "
            "of images (with --image-size) or a text file (with --tokenizer)."
        ),
    ] = None,
    batch_axis: BatchAxisOption = None,
    max_samples: Annotated[int | None, typer.Option(help="Use at most this many calibration samples.")] = None,
    image_size: Annotated[
        str | None, typer.Option(help="--data is a folder of images: resize to SIZE or HxW (e.g. 224 or 224x256).")
    ] = None,
    layout: Annotated[str, typer.Option(help="Images: NCHW (channels first) or NHWC (channels last).")] = "NCHW",
    color: Annotated[str, typer.Option(help="Images: RGB, BGR or L (grey).")] = "RGB",
    resize: Annotated[str, typer.Option(help="Images: stretch, or center_crop (keep aspect ratio).")] = "stretch",
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
    latency_check: Annotated[
        bool,
        typer.Option(help="ONNX static: time the result against float here and move int8 regions back to float "
                     "until it is not slower (recorded in the output's metadata)."),
    ] = True,
    input_shape: Annotated[
        list[str] | None, typer.Option(help="PyTorch file: example input NAME=1x3x32x32[:dtype] (repeatable).")
    ] = None,
    tokenizer: Annotated[
        Path | None, typer.Option(help="Hugging Face tokenizer folder: --data sentences.txt becomes token feeds.")
    ] = None,
    json_out: Annotated[str | None, typer.Option("--json", help="Write the result as JSON to a file or -.")] = None,
    show_all: Annotated[bool, typer.Option("--show-all", help="List every weight, not the 25 largest.")] = False,
    check_speed: Annotated[
        bool, typer.Option(help="Time the result against the input and warn if it is slower.")
    ] = True,
    report_html: Annotated[
        Path | None, typer.Option("--report", help="Write a self-contained HTML report here.")
    ] = None,
    target_runtime: Annotated[str | None, typer.Option(help=TARGET_HELP)] = None,
) -> None:
    """Quantize a float ONNX model (dynamic-range int8: ~4x smaller weights, no calibration data)."""

    def body() -> int:
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
            from tensorslim.backends.tflite.cli import quantize_tflite_command

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
            return quantize_tflite_command(
                model, output, mode=mode, form=form, data=data, granularity=granularity, range_method=range_method,
                exclude=exclude or (), min_size=min_size, ops=_split_ops(ops), io=io, json_out=json_out,
                show_all=show_all, check_speed=check_speed, table=_weights_table,
            )  # fmt: skip
        cfg = _onnx_config(
            mode, form=form, scheme=scheme, granularity=granularity, range_method=range_method, ops=_split_ops(ops),
            exclude=tuple(exclude or ()), min_size=min_size, weight_encoding=weight_encoding, bits=bits,
            block_size=block_size, method=method, accuracy_level=accuracy_level, kernel=kernel,
            data=None if data_in is None else data,
            static_options={"io_dtype": io, "activation_bits": activation_bits, "int16_nodes": tuple(int16_nodes or ()),
                            "smooth_quant": smooth_quant, "bias_correction": bias_correction, "equalize": equalize,
                            "placement": None if placement is None else str(placement),
                            "latency_check": latency_check, "learned_rounding": learned_rounding},
        )  # fmt: skip
        result = _own_weights(run_quantize(model_in, output, config=cfg, data=data_in, max_samples=max_samples,
                                           target_runtime=target), model_in)  # fmt: skip
        quiet = json_out == "-"
        if not quiet:
            console.print(_weights_table(result.records, 0 if show_all else 25))
            s = result.summary()
            console.print(
                f"quantized {s['quantized']} of {s['weights']} weights: {_mb(s['bytes_before'])} MB -> "
                f"{_mb(s['bytes_after'])} MB; model {_mb(result.input_bytes)} MB -> {_mb(result.output_bytes)} MB "
                f"({result.size_ratio:.3f}x) in {result.seconds:.1f} s"
            )
            for note in [*front_notes, *result.notes]:
                console.print(f"note: {note}")
            console.print(f"wrote {result.output_path}")
        payload = result.to_dict()
        if check_speed:
            payload["speed_check"] = _speed_check(model_in, output, quiet=quiet, mode=mode)
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

    run_command(with_batch_axes(batch_axis, body))


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

    import onnx

    own = _weight_names(onnx.load(str(model_in), load_external_data=False).graph)
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
    from tensorslim.passes.float16 import Float16Config
    from tensorslim.passes.static_quant import StaticQuantConfig

    if mode not in ONNX_MODES:
        raise InputError(f"--mode: {mode!r} is not one of {', '.join(ONNX_MODES)}")
    static_opts = dict(static_options or {})
    if mode != "static":
        defaults = {"io_dtype": "float", "activation_bits": 8, "int16_nodes": (), "smooth_quant": None,
                    "bias_correction": False, "equalize": False, "placement": None, "latency_check": True,
                    "learned_rounding": False}  # fmt: skip
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
                min_size=1024 if min_size is None else min_size, **({"op_types": ops} if ops is not None else {}),
            )  # fmt: skip
        if mode == "static":
            if data is None:
                raise InputError("--mode static needs calibration data: pass --data CALIB.npz (a few hundred samples)")
            return StaticQuantConfig(
                activation_scheme=scheme or "asymmetric", granularity=granularity,
                calibration=range_method or "minmax", exclude=exclude, **static_opts,
                **({"op_types": ops} if ops is not None else {}),  # type: ignore[arg-type]
            )  # fmt: skip
        return Float16Config(block_ops=ops or (), block_nodes=exclude)
    except ValueError as e:
        if isinstance(e, InputError):
            raise
        flag_of = {"io_dtype": "io", "activation_scheme": "scheme", "calibration": "range", "range_method": "range"}
        field, sep, rest = str(e).partition(":")  # name the command-line flag, not the config field
        raise InputError(f"--{flag_of.get(field, field).replace('_', '-')}{sep}{rest}") from None


_SLOW_HINTS = {
    "dynamic": "Try --form weight_only (float speed, same size) or check with tensorslim bench.",
    "int4": "On small layers the run-time quantization of activations costs more than the int8 kernel saves; "
    "try --kernel matmulnbits (weight-only), or check with tensorslim bench.",
}


def _speed_check(reference: Path, candidate: Path, *, quiet: bool, mode: str = "dynamic") -> dict[str, Any]:
    """A short side-by-side timing; warns when the candidate is slower than the reference."""
    from tensorslim.benchmark import benchmark_models

    try:
        rep = benchmark_models([reference, candidate], threads=0, max_time_s=1.5, min_runs=10, measure_memory=False)
    except ValueError as e:
        return {"error": str(e)}
    from tensorslim.benchmark.verdict import speed_verdict

    ref, cand = rep.models[0], rep.models[1]
    v = speed_verdict(rep)
    ratio, slower = v.ratio, v.kind == "slower"
    findings = _doctor_findings(candidate) if slower else []
    if not quiet:
        if v.warn:
            msg = v.message("on this CPU", ref.p50_ms, cand.p50_ms, f"tensorslim bench {reference} {candidate}")
            warn(msg + (" " + _SLOW_HINTS.get(mode, "") if slower else ""))
            for f in findings:
                err_console.print(f"  doctor: {f['code']}: {f['message']}\n    fix: {f['fix']}", soft_wrap=True)
        else:
            console.print(f"speed check: p50 {ref.p50_ms:.3f} ms -> {cand.p50_ms:.3f} ms ({ratio:.2f}x, batch 1)")
    return {"reference_p50_ms": ref.p50_ms, "candidate_p50_ms": cand.p50_ms, "ratio": ratio, "slower": slower,
            "verdict": v.kind, "busy": v.busy, "doctor": findings}  # fmt: skip


def _doctor_findings(candidate: Path) -> list[dict[str, Any]]:
    """The doctor's static warnings (one session creation, no timing) for a model found slower."""
    from tensorslim.diagnostics.doctor import doctor

    try:
        return [{"code": f.code, "message": f.message, "fix": f.fix} for f in doctor(candidate, measure=False).warnings]
    except Exception:  # the pre-flight is advice; the speed check stands without it
        return []


@app.command(
    name="eval",
    epilog="Examples:\n\n"
    "    tensorslim eval model.onnx model.int8.onnx --data test.npz\n\n"
    "    tensorslim eval model.onnx model.int8.onnx --json -\n\n"
    "The .npz holds one array per model input, named after it (see --data); an optional integer "
    "'label' array adds task accuracy. Exit codes: 0 ok, 2 bad input, 3 internal error.",
)
def eval_cmd(
    reference: Annotated[Path, typer.Argument(help="The original model.")],
    candidate: Annotated[Path, typer.Argument(help="The optimized model.")],
    data: Annotated[Path | None, typer.Option(help=DATA_HELP)] = None,
    batch_axis: BatchAxisOption = None,
    batch_size: Annotated[int, typer.Option(help="Samples per inference call.")] = 32,
    max_samples: Annotated[int | None, typer.Option(help="Use at most this many samples.")] = None,
    json_out: Annotated[str | None, typer.Option("--json", help="Write the result as JSON to a file or -.")] = None,
    report_html: Annotated[
        Path | None, typer.Option("--report", help="Write a self-contained HTML report here.")
    ] = None,
) -> None:
    """Compare a candidate model's outputs with a reference model's on the same inputs."""

    def body() -> int:
        from tensorslim.evaluate import evaluate

        if batch_size < 1:
            raise InputError("--batch-size: must be at least 1")
        report = evaluate(reference, candidate, data, batch_size=batch_size, max_samples=max_samples)
        if json_out != "-":
            console.print(_eval_table(report))
            for note in report.notes:
                console.print(f"note: {note}")
        if report_html is not None:
            from tensorslim.report import write_report

            write_report(
                report_html,
                evaluation=report,
                layers_of=(reference, candidate, data),
                title=f"tensorslim eval {candidate.name}",
            )
        write_json(json_out, report.to_dict())
        return EXIT_OK

    run_command(with_batch_axes(batch_axis, body))


def _eval_table(report: Any) -> Table:
    t = Table(title=f"{report.candidate} vs {report.reference} on {report.num_samples} samples ({report.data_source})")
    for col in (
        "output",
        "cosine mean",
        "cosine min",
        "SQNR dB",
        "max abs err",
        "top-1 agree",
        "accuracy ref -> cand",
    ):
        t.add_column(col)
    for o in report.outputs:
        acc = (
            f"{100 * o.reference_accuracy:.2f}% -> {100 * o.candidate_accuracy:.2f}%"
            if o.reference_accuracy is not None and o.candidate_accuracy is not None
            else "-"
        )
        t.add_row(
            o.name,
            f"{o.cosine_mean:.6f}",
            f"{o.cosine_min:.6f}",
            f"{o.sqnr_db:.2f}",
            f"{o.max_abs_error:.4g}",
            "-" if o.top1_agreement is None else f"{100 * o.top1_agreement:.2f}%",
            acc,
        )
    return t


def _parse_dims(dims: list[str] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dims or []:
        name, sep, value = d.partition("=")
        if not sep or not value.strip().isdigit():
            raise InputError(f"--dim: {d!r} is not NAME=SIZE (e.g. --dim sequence=128)")
        out[name.strip()] = int(value)
    return out


@app.command(
    epilog="Examples:\n\n"
    "    tensorslim bench model.onnx model.int8.onnx\n\n"
    "    tensorslim bench model.onnx q.onnx --batch-size 32 --dim sequence=128 --threads 2 --json bench.json\n\n"
    "Ratios are against the first model. Exit codes: 0 ok, 2 bad input, 3 internal error.",
)
def bench(
    models: Annotated[list[Path], typer.Argument(help="ONNX (or .tflite) models; the first is the baseline.")],
    threads: Annotated[int, typer.Option(help="Intra-op threads (0: ONNX Runtime default).")] = 1,
    batch_size: Annotated[int, typer.Option(help="Batch size for dynamic first dimensions.")] = 1,
    dim: Annotated[list[str] | None, typer.Option(help="Size of a named dynamic dim, NAME=SIZE.")] = None,
    seconds: Annotated[float, typer.Option(help="Time budget per model for the timed runs.")] = 5.0,
    memory: Annotated[bool, typer.Option(help="Measure peak memory in a fresh process per model.")] = True,
    denormal_as_zero: Annotated[
        bool,
        typer.Option(
            "--denormal-as-zero",
            help="Flush denormal floats to zero in every session (ONNX Runtime's session.set_denormal_as_zero); "
            "Softmax over masked attention produces denormals that are several times slower on x86.",
        ),
    ] = False,
    json_out: Annotated[str | None, typer.Option("--json", help="Write the result as JSON to a file or -.")] = None,
    report_html: Annotated[
        Path | None, typer.Option("--report", help="Write a self-contained HTML report here.")
    ] = None,
) -> None:
    """Measure size, load time, latency percentiles, throughput and peak memory side by side."""

    def body() -> int:
        from tensorslim.benchmark import benchmark_models, render_bench_table

        if batch_size < 1:
            raise InputError("--batch-size: must be at least 1")
        from tensorslim.backends.tflite.io import is_tflite

        if any(is_tflite(m) for m in models):
            from tensorslim.backends.tflite.cli import bench_tflite_command

            return bench_tflite_command(
                models, threads=threads, batch_size=batch_size, seconds=seconds, json_out=json_out,
                table=render_bench_table,
            )  # fmt: skip
        report = benchmark_models(
            models,
            threads=threads,
            batch_size=batch_size,
            dim_overrides=_parse_dims(dim),
            max_time_s=seconds,
            measure_memory=memory,
            denormal_as_zero=denormal_as_zero,
        )
        if json_out != "-":
            console.print(render_bench_table(report))
        from tensorslim.benchmark.table import busy_note

        if busy_note(report):
            warn(busy_note(report))
        if report_html is not None:
            from tensorslim.report import write_report

            pair = (models[0], models[1], None) if len(models) == 2 else None
            write_report(report_html, bench=report, title="tensorslim bench", layers_of=pair)
        write_json(json_out, report.to_dict())
        return EXIT_OK

    run_command(body)


@app.command(
    epilog="Examples:\n\n    tensorslim inspect model.onnx\n\n    tensorslim inspect model.onnx --json stats.json\n\n"
    "Exit codes: 0 ok, 2 bad input, 3 internal error.",
)
def inspect(
    model: Annotated[Path, typer.Argument(help="ONNX or TFLite model to inspect.")],
    top: Annotated[int, typer.Option(help="Show the N weights with the worst per-tensor SQNR (0: all).")] = 20,
    json_out: Annotated[str | None, typer.Option("--json", help="Write the result as JSON to a file or -.")] = None,
) -> None:
    """Per-weight statistics that predict quantization trouble, and recommended settings."""

    def body() -> int:
        from tensorslim.analysis.inspect import inspect_model
        from tensorslim.backends.onnx.io import load_model
        from tensorslim.backends.tflite.io import is_tflite

        if is_tflite(model):
            from tensorslim.backends.tflite.inspect import inspect_tflite
            from tensorslim.backends.tflite.io import load_model as load_tflite

            report = inspect_tflite(load_tflite(model), name=str(model))
        else:
            report = inspect_model(load_model(model), name=str(model))
        if json_out != "-":
            t = Table(title=f"{model}: {len(report.weights)} weights (worst per-tensor SQNR first)")
            for col in (
                "weight", "op", "shape", "min", "max", "outliers >6σ", "max/p99.9", "ch. spread",
                "SQNR tensor", "SQNR channel", "SQNR ch.+mse",
            ):  # fmt: skip
                t.add_column(col, overflow="fold")
            rows = sorted(report.weights, key=lambda w: w.sqnr_per_tensor_db)
            for w in rows[:top] if top > 0 else rows:
                t.add_row(
                    w.name, w.op_type, "x".join(map(str, w.shape)), f"{w.min:.3g}", f"{w.max:.3g}",
                    f"{100 * w.outlier_ratio:.3f}%", f"{w.peak_to_p999:.2f}", f"{w.channel_range_spread:.2f}",
                    f"{w.sqnr_per_tensor_db:.1f}",
                    "-" if w.sqnr_per_channel_db is None else f"{w.sqnr_per_channel_db:.1f}",
                    "-" if w.sqnr_per_channel_mse_db is None else f"{w.sqnr_per_channel_mse_db:.1f}",
                )  # fmt: skip
            console.print(t)
            console.print("recommendations", style="bold")
            for r in report.recommendations:
                console.print(f"  - {r}")
        write_json(json_out, report.to_dict())
        return EXIT_OK

    run_command(body)


@app.command(
    epilog="Examples:\n\n"
    "    tensorslim optimize                 # the bundled digits CNN: calibration, selection and test splits\n\n"
    "    tensorslim optimize model.onnx --data calib.npz --eval-data val.npz --test-data test.npz "
    "--max-drop 1% --objective size --budget 40 --workers 2\n\n"
    "    tensorslim optimize model.onnx --data calib.npz --eval-data val.npz --metric cosine --max-drop 0.01 "
    "--ray auto\n\n"
    "    tensorslim optimize model.onnx --eval-data val.npz --metric python:mymetrics:f1 -o out/ --resume\n\n"
    "Exit codes: 0 ok, 1 no candidate met the accuracy budget, 2 bad input, 3 internal error.",
)
def optimize(
    model: Annotated[Path | None, typer.Argument(help="ONNX model; the bundled example when omitted.")] = None,
    data: Annotated[Path | None, typer.Option(help="Calibration data given to the passes: " + DATA_HELP)] = None,
    eval_data: Annotated[Path | None, typer.Option(help="Data the candidates are scored on (as --data).")] = None,
    test_data: Annotated[
        Path | None, typer.Option(help="Held-out data (as --data): the chosen model's drop is measured on it.")
    ] = None,
    batch_axis: BatchAxisOption = None,
    metric: Annotated[
        str, typer.Option(help="top1, cosine, sqnr, embedding-cosine, python:module:function; auto: top1 if labels.")
    ] = "auto",
    max_drop: Annotated[str, typer.Option(help="Allowed drop from the float score: 1% or 0.01.")] = "1%",
    min_score: Annotated[float | None, typer.Option(help="Or an absolute floor of the metric (e.g. SQNR dB).")] = None,
    objective: Annotated[str, typer.Option(help="What to minimize: size, latency or both.")] = "size",
    budget: Annotated[int, typer.Option(help="Search trials (the built-in recipes come on top).")] = 16,
    workers: Annotated[int, typer.Option(help="Candidates evaluated in parallel (processes or Ray tasks).")] = 2,
    ray: Annotated[
        str | None, typer.Option(help="Run the evaluations as Ray tasks: auto (existing cluster) or an ADDRESS.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampler and the passes.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue the study stored in --output-dir.")] = False,
    sampler: Annotated[str, typer.Option(help="Optuna sampler: tpe, nsga2 or random.")] = "tpe",
    builtins: Annotated[bool, typer.Option(help="Evaluate the built-in recipes too (the comparison).")] = True,
    fallback_layers: Annotated[
        int, typer.Option(help="Most sensitive layers offered as float/int16 fallbacks (0: none).")
    ] = 4,
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Folder for the study, cache, best.*.")] = Path(
        "tensorslim-out"
    ),
    threads: Annotated[int, typer.Option(help="Intra-op threads of the latency measurements (as bench).")] = 1,
    batch_size: Annotated[int, typer.Option(help="Batch size of the latency measurements.")] = 1,
    seconds: Annotated[
        float,
        typer.Option(help="Timed seconds per model of each interleaved latency run, taken after the accuracy work "
                     "with bench's harness (0: no latency)."),
    ] = 2.0,
    json_out: Annotated[str | None, typer.Option("--json", help="Write the result as JSON to a file or -.")] = None,
    report_html: Annotated[
        Path | None, typer.Option("--report", help="Write a self-contained HTML report here.")
    ] = None,
) -> None:
    """Search for the smallest (or fastest) model whose accuracy stays within --max-drop of the float model.

    Evaluates the built-in recipes and an Optuna search over quantization, pruning, clustering and packing
    (with per-layer fallbacks for the most sensitive layers), prints the comparison and the Pareto front, and
    writes the chosen model to OUTPUT_DIR/best.onnx (or .tslim) with its recipe in OUTPUT_DIR/best.yaml.
    """

    def body() -> int:
        from tensorslim.errors import TargetNotMetError
        from tensorslim.evaluate.metrics import parse_max_drop
        from tensorslim.progress import progress_enabled
        from tensorslim.search import SearchConfig
        from tensorslim.search.optimize import optimize_search, render_search_tables

        cfg = SearchConfig(metric=metric, max_drop=parse_max_drop(max_drop), min_score=min_score,
                           objective=objective, budget=budget, workers=workers, ray=ray, seed=seed, resume=resume,
                           sampler=sampler, builtins=builtins, fallback_layers=fallback_layers)  # fmt: skip
        plain = json_out != "-" and not progress_enabled()  # piped: one plain line per step instead of a bar

        def step(line: str) -> None:
            err_console.print(line, markup=False, highlight=False, soft_wrap=True)

        result = optimize_search(
            model, data=data, eval_data=eval_data, test_data=test_data, output_dir=output_dir, config=cfg,
            threads=threads, batch_size=batch_size, seconds=seconds, progress=None if json_out != "-" else False,
            on_step=step if plain else None,
        )  # fmt: skip
        res = result.search
        if result.comparison.busy:
            err_console.print(f"[bold yellow]warning:[/] {result.comparison.busy}", soft_wrap=True)
        if json_out != "-":
            for table in render_search_tables(result):
                console.print(table)
            if res.chosen is not None:
                console.print(f"chosen: {res.chosen.name} -> {res.chosen_path} (recipe: {output_dir / 'best.yaml'})")
                if res.test is not None:
                    t = res.test
                    console.print(
                        f"held-out test split {Path(t['data']).name} ({t['num_samples']} samples): "
                        f"{res.metric} {t['float_score']:.4f} -> "
                        f"{t['chosen_score']:.4f} (drop {t['drop']:.4f}, "
                        f"{'within' if t['within_budget'] else 'OUTSIDE'} the budget)"
                    )
                beats = res.beats_builtins()
                console.print(f"better than every built-in recipe that meets the budget: {'yes' if beats else 'no'}")
            for note in result.comparison.notes:
                console.print(f"note: {note}")
        if report_html is not None:
            from tensorslim.report import write_report

            layers = None
            if res.chosen_path is not None and res.chosen_path.suffix == ".onnx":
                layers = (res.model, res.chosen_path, str(eval_data) if eval_data else None)
            write_report(report_html, optimize=result.comparison, search=res, layers_of=layers,
                         title=f"tensorslim optimize {res.model.name}")  # fmt: skip
        write_json(json_out, result.to_dict())
        if res.chosen is None:
            best = max((c for c in res.candidates if c.ok), key=lambda c: c.score or 0.0, default=None)
            raise TargetNotMetError(
                f"no candidate reached {res.metric} >= {res.threshold:.4f} (float {res.reference_score:.4f}"
                + (f", best {best.score:.4f} by {best.name}" if best is not None else ", every candidate failed")
                + "); allow a larger --max-drop or try a larger --budget"
            )
        return EXIT_OK

    run_command(with_batch_axes(batch_axis, body))


def _register_plugins() -> None:
    """Import every module of ``tensorslim.commands``; each registers its commands on the app."""
    import importlib
    import pkgutil

    import tensorslim.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"tensorslim.commands.{info.name}")


_register_plugins()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
