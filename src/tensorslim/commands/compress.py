"""``tensorslim prune``, ``cluster``, ``pack``, ``unpack`` and ``compress`` (the combined pipeline)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tensorslim.commands._kit import EXIT_OK, command, console, user_config, write_json
from tensorslim.commands._options import (
    BatchAxisOption,
    JsonOption,
    TargetRuntimeOption,
    data_option,
    output_option,
)
from tensorslim.commands._tables import SHORT_COLUMNS, weights_table
from tensorslim.errors import InputError

__all__ = ["cluster_cmd", "compress_cmd", "pack_cmd", "prune_cmd", "unpack_cmd"]


def _weights_written(records: list[Any], output: Path, json_out: str | None, title: str) -> int:
    """The prune and cluster output: what was done to each weight (25 largest), the file written, the JSON."""
    if json_out != "-":
        console.print(weights_table(records, 25, title=title, columns=SHORT_COLUMNS))
        console.print(f"wrote {output}")
    write_json(json_out, {"output_path": str(output), "weights": [r.to_dict() for r in records]})
    return EXIT_OK


def _sparsity_arg(value: float | None) -> float | None:
    if value is not None and not 0.0 <= value < 1.0:
        raise InputError(f"--sparsity {value}: must be in [0, 1) (0.5 prunes half the weights)")
    return value


@command("prune", """
    tensorslim prune model.onnx -o pruned.onnx --sparsity 0.5
    tensorslim prune model.onnx -o pruned.onnx --pattern 2:4 --data calib.npz
    tensorslim prune model.onnx -o small.onnx --pattern channel --sparsity 0.5 --data calib.npz
    tensorslim prune model.tflite -o pruned.tflite --sparsity 0.5
""")
def prune_cmd(
    model: Annotated[Path, typer.Argument(help="Float ONNX or .tflite model (never modified).")],
    output: Annotated[Path, output_option("Where to write the pruned model.")],
    sparsity: Annotated[
        float | None, typer.Option(help="Fraction pruned, in [0, 1) [default 0.5; implied by N:M].")
    ] = None,
    pattern: Annotated[str, typer.Option(help="unstructured, N:M (2:4, 4:8) or channel (shrinks the graph).")] = (
        "unstructured"
    ),
    method: Annotated[
        str, typer.Option(help="auto (sparsegpt with --data, else magnitude), magnitude, wanda or sparsegpt.")
    ] = "auto",
    scope: Annotated[str, typer.Option(help="per_layer or global (one magnitude ranking).")] = "per_layer",
    max_layer_sparsity: Annotated[float, typer.Option(help="global scope: cap of any layer's sparsity.")] = 1.0,
    exclude: Annotated[list[str] | None, typer.Option(help="Regex on node names to leave dense (repeatable).")] = None,
    data: Annotated[Path | None, data_option("Calibration data (activation-aware, refit): ")] = None,
    batch_axis: BatchAxisOption = None,
    max_samples: Annotated[int, typer.Option(help="Calibration samples used at most.")] = 256,
    json_out: JsonOption = None,
) -> int:
    """Prune weights: unstructured or N:M (zeros in place), or whole channels (a smaller, faster graph)."""

    from tensorslim.api.compression import prune, prune_channels
    from tensorslim.passes.channel_prune import ChannelPruneConfig
    from tensorslim.passes.prune import PruneConfig

    s = _sparsity_arg(sparsity)
    if pattern == "channel":
        cfg_c = ChannelPruneConfig(ratio=0.5 if s is None else s, exclude=tuple(exclude or ()))
        res = prune_channels(model, output, config=cfg_c, data=data, max_samples=max_samples)
    else:
        m = method if method != "auto" else ("sparsegpt" if data is not None else "magnitude")
        cfg = PruneConfig(sparsity=s, pattern=pattern, method=m, scope=scope,
                          max_layer_sparsity=max_layer_sparsity, exclude=tuple(exclude or ()))  # fmt: skip
        res = prune(model, output, config=cfg, data=data, max_samples=max_samples)
    return _weights_written(res.records, output, json_out, "pruned weights")


@command("cluster", """
    tensorslim cluster model.onnx -o clustered.onnx --clusters 16
    tensorslim cluster model.onnx -o clustered.onnx --clusters 16 --per-channel --data calib.npz
    tensorslim cluster m.onnx -o emb.onnx --clusters 12 --per-channel --ops Gather --codebook-dtype float16
    tensorslim cluster emb.onnx -o both.onnx --clusters 32 --ops MatMul --data calib.npz
    tensorslim cluster model.tflite -o clustered.tflite --clusters 16   (float centroids in place; pack it)
""")
def cluster_cmd(
    model: Annotated[Path, typer.Argument(help="Float ONNX or .tflite model (never modified).")],
    output: Annotated[Path, output_option("Where to write the clustered model.")],
    clusters: Annotated[int, typer.Option(help="Centroids per codebook, 2 to 256.")] = 16,
    per_channel: Annotated[bool, typer.Option("--per-channel", help="One codebook per output channel.")] = False,
    init: Annotated[str, typer.Option(help="kmeans++, linear or density.")] = "kmeans++",
    codebook_dtype: Annotated[str, typer.Option(help="float32 or float16 codebooks.")] = "float32",
    ops: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated op types to cluster [default: Conv,ConvTranspose,Gemm,MatMul,Gather,LSTM,GRU,RNN]."
        ),
    ] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Regex on node names to keep float (repeatable).")] = None,
    data: Annotated[Path | None, data_option("Calibration data (activation-aware): ")] = None,
    batch_axis: BatchAxisOption = None,
    max_samples: Annotated[int, typer.Option(help="Calibration samples used at most.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the k-means++ sampling.")] = 0,
    json_out: JsonOption = None,
) -> int:
    """Cluster weights into codebooks: uint8 indices + centroids in the file, float weights at load time."""

    from tensorslim.api.compression import cluster
    from tensorslim.passes.cluster import CLUSTER_OPS, ClusterConfig

    if clusters < 2 or clusters > 256:
        raise InputError(f"--clusters {clusters}: must be from 2 to 256")
    op_types = tuple(o.strip() for o in ops.split(",") if o.strip()) if ops else CLUSTER_OPS
    cfg = ClusterConfig(clusters=clusters, granularity="per_channel" if per_channel else "per_tensor", init=init,
                        codebook_dtype=codebook_dtype, exclude=tuple(exclude or ()), seed=seed,
                        op_types=op_types)  # fmt: skip
    res = cluster(model, output, config=cfg, data=data, max_samples=max_samples)
    return _weights_written(res.records, output, json_out, "clustered weights")


def _pack_table(rep: Any, kind: str = "ONNX") -> Table:
    t = Table(title=f"{rep.output_path.name}: {rep.file_bytes:,} bytes, {rep.bits_per_weight:.3f} bits per weight",
              title_justify="left")  # fmt: skip
    t.add_column("part")
    t.add_column("bytes", justify="right")
    t.add_column("share", justify="right")
    for k, v in sorted(rep.parts.items(), key=lambda kv: -kv[1]):
        t.add_row(k, f"{v:,}", f"{100 * v / rep.file_bytes:.1f}%")
    t.add_row(f"{kind} file (input)", f"{rep.onnx_bytes:,}", f"{rep.onnx_bytes / rep.file_bytes:.2f}x")
    for k, v in rep.baselines.items():
        t.add_row(f"{k} of the {kind} file", f"{v:,}", f"{v / rep.file_bytes:.2f}x")
    return t


@command("pack", """
    tensorslim pack model.onnx -o model.tslim
    tensorslim pack clustered.onnx -o model.tslim --compare --json -
    tensorslim pack model.tflite -o model.tslim --compare
""")
def pack_cmd(
    model: Annotated[Path, typer.Argument(help="ONNX or .tflite model to pack (never modified).")],
    output: Annotated[Path, output_option("The .tslim file to write.")],
    level: Annotated[int, typer.Option(help="zstd level, 1-22.")] = 19,
    compare: Annotated[
        bool, typer.Option("--compare", help="Also report zstd -19, lzma (xz -9e) and gzip -9 of the model file.")
    ] = False,
    json_out: JsonOption = None,
) -> int:
    """Pack a model into the smallest file to ship (.tslim): bytes per part and bits per weight."""

    from tensorslim.api.compression import pack
    from tensorslim.backends.tflite.io import is_tflite
    from tensorslim.pack import PackConfig

    rep = pack(model, output, config=user_config(PackConfig, level=level, compare=compare))
    if json_out != "-":
        console.print(_pack_table(rep, "TFLite" if is_tflite(model) else "ONNX"))
        console.print(f"wrote {output} in {rep.seconds:.2f} s")
    write_json(json_out, rep.to_dict())
    return EXIT_OK


@command("unpack", """
    tensorslim unpack model.tslim -o model.onnx
    tensorslim unpack packed-tflite.tslim -o model.tflite
""")
def unpack_cmd(
    model: Annotated[Path, typer.Argument(help="The .tslim file.")],
    output: Annotated[Path, output_option("Where to write the ONNX (or .tflite) model.")],
    json_out: JsonOption = None,
) -> int:
    """Unpack a .tslim file into a runnable ONNX model whose weights are bit-exact to the packed model (a packed
    .tflite: the exact bytes of the file that was packed)."""

    from tensorslim.pack import unpack_file
    from tensorslim.pack.tflite import is_tflite_pack, unpack_tflite

    if is_tflite_pack(model):
        if output.suffix.lower() == ".onnx":
            raise InputError(f"{model} holds a .tflite model; name the output *.tflite")
        unpack_tflite(model, output)
    else:
        unpack_file(model, output)  # streamed: the model is never held whole in memory
    if json_out != "-":
        console.print(f"wrote {output} ({output.stat().st_size:,} bytes)")
    write_json(json_out, {"output_path": str(output), "bytes": output.stat().st_size})
    return EXIT_OK


@command("compress", """
    tensorslim compress model.onnx -o model.tslim --clusters 16 --data calib.npz
    tensorslim compress model.onnx -o model.tslim --sparsity 0.5 --clusters 16 --no-quantize
""")
def compress_cmd(
    model: Annotated[Path, typer.Argument(help="Float ONNX model (never modified).")],
    output: Annotated[Path, output_option("The .tslim file to write.")],
    sparsity: Annotated[float, typer.Option(help="Unstructured sparsity of the prune stage (0 skips it).")] = 0.0,
    pattern: Annotated[str, typer.Option(help="unstructured or N:M for the prune stage.")] = "unstructured",
    clusters: Annotated[int, typer.Option(help="Centroids per codebook (0 skips clustering).")] = 16,
    per_channel: Annotated[bool, typer.Option(help="One codebook per output channel.")] = True,
    quantize: Annotated[bool, typer.Option(help="int8 for the weights that stay float.")] = True,
    data: Annotated[Path | None, data_option("Calibration data (activation-aware stages): ")] = None,
    eval_data: Annotated[Path | None, typer.Option(help="Data for each stage's fidelity [default: --data].")] = None,
    batch_axis: BatchAxisOption = None,
    json_out: JsonOption = None,
    target_runtime: TargetRuntimeOption = None,
) -> int:
    """Prune -> cluster -> quantize -> pack, with each stage's size and fidelity against the input."""

    from tensorslim.api.compression import compress

    _sparsity_arg(sparsity)
    if clusters == 1 or clusters < 0 or clusters > 256:
        raise InputError(f"--clusters {clusters}: must be from 2 to 256 (0 skips clustering)")
    rep = compress(model, output, sparsity=sparsity, pattern=pattern, clusters=clusters or None,
                   per_channel=per_channel, quantize=quantize, data=data, eval_data=eval_data,
                   target_runtime=target_runtime)  # fmt: skip
    if json_out != "-":
        t = Table(title=f"tensorslim compress {model.name}", title_justify="left")
        scored = "on generated inputs"  # which data each accuracy is on
        if eval_data is not None:
            scored = f"on {eval_data.name}"
        elif data is not None:
            scored = f"on the calibration data {data.name}"
        for col in ("stage", "bytes", "size x", "cosine", "SQNR dB", f"accuracy ({scored})", "s", "detail"):
            t.add_column(col)
        for s in rep.stages:
            cos = "-" if s.cosine_mean is None else f"{s.cosine_mean:.5f}"
            sq = "-" if s.sqnr_db is None else f"{s.sqnr_db:.1f}"
            acc = "-" if s.accuracy is None else f"{100 * s.accuracy:.2f}%"
            t.add_row(s.stage, f"{s.bytes:,}", f"{s.ratio:.4f}", cos, sq, acc, f"{s.seconds:.1f}", s.detail)
        console.print(t)
        if eval_data is None and data is not None:
            console.print("note: fidelity is measured on the calibration data; --eval-data gives a held-out figure")
        if rep.pack is not None:
            console.print(_pack_table(rep.pack))
        console.print(f"wrote {output}")
    write_json(json_out, rep.to_dict())
    return EXIT_OK
