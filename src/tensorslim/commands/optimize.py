"""``tensorslim optimize [MODEL]``: search for the smallest (or fastest) model within an accuracy budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tensorslim.commands._kit import EXIT_OK, command, console, err_console, user_config, write_json
from tensorslim.commands._options import BatchAxisOption, JsonOption, ReportOption, data_option

__all__ = ["optimize"]


@command("optimize", """
    tensorslim optimize                 # the bundled digits CNN: calibration, selection and test splits
    tensorslim optimize model.onnx --data calib.npz --eval-data val.npz --test-data test.npz --max-drop 1%
        --objective size --budget 40 --workers 2
    tensorslim optimize model.onnx --data calib.npz --eval-data val.npz --metric cosine --max-drop 0.01 --ray auto
    tensorslim optimize model.onnx --eval-data val.npz --metric python:mymetrics:f1 -o out/ --resume
""", exits="Exit codes: 0 ok, 1 no candidate met the accuracy budget, 2 bad input, 3 internal error.")
def optimize(
    model: Annotated[Path | None, typer.Argument(help="ONNX model; the bundled example when omitted.")] = None,
    data: Annotated[Path | None, data_option("Calibration data given to the passes: ")] = None,
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
    json_out: JsonOption = None,
    report_html: ReportOption = None,
) -> int:
    """Search for the smallest (or fastest) model whose accuracy stays within --max-drop of the float model.

    Evaluates the built-in recipes and an Optuna search over quantization, pruning, clustering and packing
    (with per-layer fallbacks for the most sensitive layers), prints the comparison and the Pareto front, and
    writes the chosen model to OUTPUT_DIR/best.onnx (or .tslim) with its recipe in OUTPUT_DIR/best.yaml.
    """

    from tensorslim.errors import TargetNotMetError
    from tensorslim.evaluate.metrics import parse_max_drop
    from tensorslim.progress import progress_enabled
    from tensorslim.search import SearchConfig
    from tensorslim.search.optimize import optimize_search, render_search_tables

    cfg = user_config(SearchConfig, metric=metric, max_drop=parse_max_drop(max_drop), min_score=min_score,
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
    if res.chosen is None and res.slower_than_float:
        raise TargetNotMetError(f"{res.slower_than_float}; the float model stays the fastest: try a larger --budget or "
                                f"--max-drop, or --objective size")  # fmt: skip
    if res.chosen is None:
        best = max((c for c in res.candidates if c.ok), key=lambda c: c.score or 0.0, default=None)
        raise TargetNotMetError(
            f"no candidate reached {res.metric} >= {res.threshold:.4f} (float {res.reference_score:.4f}"
            + (f", best {best.score:.4f} by {best.name}" if best is not None else ", every candidate failed")
            + "); allow a larger --max-drop or try a larger --budget"
        )
    return EXIT_OK
