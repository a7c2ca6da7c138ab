"""A registry of named recipes; :func:`builtin_recipes` fills a fresh one from the YAML files shipped here."""

from __future__ import annotations

from importlib import resources

from tensorslim.recipe.schema import Recipe, RecipeError, dump_recipe, load_recipe

__all__ = ["RecipeRegistry", "builtin_recipes"]


class RecipeRegistry:
    """Named recipes, each with the YAML text it was read from (an object a test can build fresh)."""

    def __init__(self) -> None:
        self._recipes: dict[str, Recipe] = {}
        self._texts: dict[str, str] = {}

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._recipes)

    def get(self, name: str) -> Recipe:
        """The recipe called ``name``.

        Raises:
            RecipeError: no such recipe (the message lists the known names).
        """
        if name not in self._recipes:
            raise RecipeError(
                f"{name!r}: no such recipe; built-in recipes: {', '.join(self.names())} (or give a .yaml file)"
            )
        return self._recipes[name]

    def text(self, name: str) -> str:
        """The YAML text of recipe ``name`` (loads back to the same recipe)."""
        self.get(name)
        return self._texts[name]

    def register(self, recipe: Recipe, text: str | None = None) -> None:
        """Add ``recipe`` under its name (replacing one of the same name); ``text`` defaults to its dump."""
        if text is not None and load_recipe(text) != recipe:
            raise RecipeError(f"{recipe.name}: the text given does not load back to the recipe")
        self._recipes[recipe.name] = recipe
        self._texts[recipe.name] = text if text is not None else dump_recipe(recipe)

    def __contains__(self, name: object) -> bool:
        return name in self._recipes

    def __len__(self) -> int:
        return len(self._recipes)


def builtin_recipes() -> RecipeRegistry:
    """A fresh registry of the recipes shipped in ``tensorslim/recipe/builtin/*.yaml``."""
    reg = RecipeRegistry()
    folder = resources.files("tensorslim.recipe").joinpath("builtin")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        text = entry.read_text(encoding="utf-8")
        recipe = load_recipe(text if "\n" in text else text + "\n")
        if f"{recipe.name}.yaml" != entry.name:  # pragma: no cover - a packaging mistake
            raise RecipeError(f"builtin/{entry.name}: holds recipe {recipe.name!r}; name the file after it")
        reg.register(recipe, text)
    return reg
