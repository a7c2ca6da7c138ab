"""``tensorslim recipe list|show|check`` and ``tensorslim run RECIPE MODEL``: recipes from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tensorslim.commands import _options as opt
from tensorslim.commands._kit import EXIT_OK, command, console, write_json
from tensorslim.commands._tables import eval_table, mb, weights_table

__all__ = ["recipe_check_cmd", "recipe_list_cmd", "recipe_show_cmd", "run_cmd"]

_EXIT = "Exit codes: 0 ok, 2 bad input (or an invalid recipe), 3 internal error."

#: The command group of ``recipe list|show|check``.
GROUPS = {"recipe": "List, show and check recipes: strict YAML that names the passes to run (see docs/recipes.md)."}


def _resolve(recipe: str) -> Any:
    """A recipe from a YAML file (a path that exists, or ends in .yaml/.yml) or a built-in name."""
    from tensorslim.recipe import builtin_recipes, load_recipe

    p = Path(recipe)
    if p.suffix.lower() in (".yaml", ".yml") or p.exists():
        return load_recipe(p)
    return builtin_recipes().get(recipe)


@command("list", """
    tensorslim recipe list
    tensorslim recipe list --json -
""", exits="", group="recipe")
def recipe_list_cmd(
    json_out: Annotated[str | None, typer.Option("--json", help="Write the list as JSON to a file or -.")] = None,
) -> int:
    """List the built-in recipes with their descriptions."""

    from rich.table import Table

    from tensorslim.recipe import builtin_recipes

    reg = builtin_recipes()
    if json_out != "-":
        t = Table(title="built-in recipes (tensorslim recipe show NAME > my.yaml to start your own)",
                  title_justify="left")  # fmt: skip
        t.add_column("name")
        t.add_column("passes")
        t.add_column("description", overflow="fold")
        for n in reg.names():
            r = reg.get(n)
            t.add_row(n, " -> ".join(p.kind for p in r.passes), r.description)
        console.print(t)
    rows = [{"name": n, "description": reg.get(n).description, "passes": [p.kind for p in reg.get(n).passes]}
            for n in reg.names()]  # fmt: skip
    write_json(json_out, {"recipes": rows})
    return EXIT_OK


@command("show", """
    tensorslim recipe show static-int8
    tensorslim recipe show int4 > my.yaml    # edit it, then: tensorslim run my.yaml model.onnx -o out.onnx
""", exits=_EXIT, group="recipe")
def recipe_show_cmd(
    name: Annotated[str, typer.Argument(help="A built-in recipe name or a recipe .yaml file.")],
) -> int:
    """Print a recipe as YAML (it loads back identically)."""

    import sys

    from tensorslim.recipe import builtin_recipes, dump_recipe

    reg = builtin_recipes()
    text = reg.text(name) if name in reg else dump_recipe(_resolve(name))
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


@command("check", """
    tensorslim recipe check my.yaml
""", exits=_EXIT, group="recipe")
def recipe_check_cmd(
    path: Annotated[Path, typer.Argument(help="The recipe .yaml file.")],
    json_out: opt.JsonOption = None,
) -> int:
    """Validate a recipe file: exit 0 when valid, 2 with the key path of the first problem otherwise."""

    from tensorslim.recipe import load_recipe, recipe_hash

    r = load_recipe(path)
    if json_out != "-":
        console.print(f"{path}: valid recipe {r.name!r} (version {r.version}): "
                      f"{' -> '.join(p.kind for p in r.passes)}")  # fmt: skip
    write_json(json_out, {"valid": True, "name": r.name, "hash": recipe_hash(r), "recipe": r.to_dict()})
    return EXIT_OK


@command("run", """
    tensorslim run dynamic-int8 model.onnx -o model.int8.onnx
    tensorslim run static-int8 model.onnx -o model.qdq.onnx --data calib.npz --eval-data test.npz
    tensorslim run prune-cluster-pack model.onnx -o model.tslim
    tensorslim run my.yaml model.onnx -o out.onnx --json result.json --report report.html
""", exits=_EXIT)
def run_cmd(
    recipe: Annotated[str, typer.Argument(help="A recipe .yaml file or a built-in name (tensorslim recipe list).")],
    model: Annotated[Path, typer.Argument(help="Float ONNX model (never modified).")],
    output: Annotated[Path, opt.output_option("Output .onnx (.tslim when the recipe packs).")],
    data: Annotated[Path | None, opt.data_option("Calibration data for the passes: ")] = None,
    batch_axis: opt.BatchAxisOption = None,
    eval_data: Annotated[
        Path | None, typer.Option(help=".npz to evaluate the output on (labels: accuracy) [default: generated].")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the passes that sample (clustering).")] = 0,
    show_all: opt.ShowAllOption = False,
    json_out: opt.JsonOption = None,
    report_html: opt.ReportOption = None,
    target_runtime: opt.TargetRuntimeOption = None,
) -> int:
    """Apply a recipe to a model, then evaluate the output against the input."""

    from tensorslim.evaluate import evaluate
    from tensorslim.recipe import apply_recipe, recipe_hash
    from tensorslim.runtime.base import open_runtime

    r = _resolve(recipe)
    result = apply_recipe(r, model, output, data=data, seed=seed, target_runtime=target_runtime)
    quiet = json_out == "-"
    if not quiet:
        console.print(weights_table(result.records, 0 if show_all else 25))
        console.print(
            f"recipe {r.name}: {' -> '.join(s.kind for s in result.steps)}; model {mb(result.input_bytes)} MB "
            f"-> {mb(result.output_bytes)} MB ({result.size_ratio:.3f}x) in {result.seconds:.1f} s"
        )
        for note in result.notes:
            console.print(f"note: {note}")
        console.print(f"wrote {result.output_path}")
    report = evaluate(open_runtime(model), open_runtime(output), eval_data)
    if not quiet:
        console.print(eval_table(report))
        for note in report.notes:
            console.print(f"note: {note}")
    if report_html is not None:
        from tensorslim.report import write_report

        packed = output.suffix.lower() == ".tslim"
        write_report(report_html, evaluation=report, layers_of=None if packed else (model, output, eval_data),
                     title=f"tensorslim run {r.name} {model.name}")  # fmt: skip
    payload = result.to_dict()
    payload["recipe_hash"] = recipe_hash(r)
    payload["evaluation"] = report.to_dict()
    write_json(json_out, payload)
    return EXIT_OK
