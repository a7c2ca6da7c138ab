"""Recipes: strict, versioned YAML that names the passes to run on a model, with per-layer rules.

Typical use::

    from tensorslim.recipe import apply_recipe, builtin_recipes, load_recipe

    recipe = load_recipe("my.yaml")                      # or builtin_recipes().get("static-int8")
    result = apply_recipe(recipe, "model.onnx", "model.int8.onnx", data="calib.npz")

See ``docs/recipes.md`` for the schema.
"""

from tensorslim.recipe.apply import RecipeResult, apply_recipe
from tensorslim.recipe.registry import RecipeRegistry, builtin_recipes
from tensorslim.recipe.schema import (
    PASS_KINDS,
    SCHEMA_VERSION,
    PassSpec,
    Recipe,
    RecipeError,
    Rule,
    dump_recipe,
    load_recipe,
    recipe_from_dict,
    recipe_hash,
)

__all__ = [
    "PASS_KINDS",
    "SCHEMA_VERSION",
    "PassSpec",
    "Recipe",
    "RecipeError",
    "RecipeRegistry",
    "RecipeResult",
    "Rule",
    "apply_recipe",
    "builtin_recipes",
    "dump_recipe",
    "load_recipe",
    "recipe_from_dict",
    "recipe_hash",
]
