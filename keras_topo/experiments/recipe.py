"""Deprecated alias of `keras_topo.training_recipe` (the recipe moved below the runner, where
`keras_topo.pruning.finetune` can use it): every name reads through with a DeprecationWarning."""

import warnings

from keras_topo import training_recipe


def __getattr__(name):
    if name.startswith("__") or not hasattr(training_recipe, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(training_recipe, name)
    warnings.warn(
        f"keras_topo.experiments.recipe.{name} is deprecated: use "
        f"keras_topo.training_recipe.{name}.",
        DeprecationWarning,
        stacklevel=2,
    )
    return value


def __dir__():
    return [name for name in dir(training_recipe) if not name.startswith("__")]
