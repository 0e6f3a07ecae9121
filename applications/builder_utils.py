"""Argument checks, the topography, width scaling, the torch-default linear layer and weights."""

import math
import numbers
import os
import warnings

import keras

from keras_topo.topography import Topography


def check_inputs(input_shape, num_classes, width_multiplier, min_size=1):
    """Validates the arguments every builder shares; returns `input_shape` as a tuple."""
    shape = tuple(input_shape) if isinstance(input_shape, (list, tuple)) else None
    if shape is None or len(shape) != 3 or not all(_is_positive_int(d) for d in shape):
        raise ValueError(
            f"input_shape must be (height, width, channels) with positive integers, e.g. "
            f"(32, 32, 3) for images or (64, 101, 1) for log-mel spectrograms; got {input_shape!r}."
        )
    if min(shape[:2]) < min_size:
        raise ValueError(
            f"input_shape {shape}: height and width must be at least {min_size} for this model."
        )
    if not _is_positive_int(num_classes):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    if not isinstance(width_multiplier, (int, float)) or not width_multiplier > 0:
        raise ValueError(f"width_multiplier must be a positive number, got {width_multiplier!r}.")
    return tuple(int(d) for d in shape)


def resolve_topography(topography, settings):
    """The builder's `Topography`, built once from its `topography` (None, a scheme name or a
    `Topography`) and `**topography_settings` (`Topography` fields replacing its own;
    `topographic_weight=` is the deprecated name of `weight`). None for the plain baseline,
    whose settings are checked all the same, so that a misspelt one is never ignored."""
    if "topographic_weight" in settings:
        warnings.warn(
            "The builders' topographic_weight= is deprecated: pass weight= (or a "
            "keras_topo.Topography(..., weight=...)).",
            DeprecationWarning,
            stacklevel=3,
        )
        settings = dict(settings)
        if "weight" in settings:
            raise ValueError("give weight= or its old name topographic_weight=, not both.")
        settings["weight"] = settings.pop("topographic_weight")
    resolved = Topography.coerce(topography, **settings)
    return None if topography is None else resolved


def scaled(width, width_multiplier):
    """`round(width * width_multiplier)`, at least 2 (a topographic layer needs 2 channels)."""
    return max(2, int(round(width * width_multiplier)))


def torch_linear(units, fan_in, name, kernel_initializer=None, bias_initializer=None):
    """`Dense` initialised as torch's `nn.Linear` default unless told otherwise.

    torch draws weight and bias from `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`; Keras'
    `VarianceScaling(1/3, "fan_in", "uniform")` has exactly that bound for the kernel.
    """
    bound = 1.0 / math.sqrt(fan_in)
    return keras.layers.Dense(
        units,
        kernel_initializer=kernel_initializer
        or keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform"),
        bias_initializer=bias_initializer or keras.initializers.RandomUniform(-bound, bound),
        name=name,
    )


def finish(inputs, outputs, factory, weights, name):
    """The functional model, its topographic weights set, `weights` loaded if given."""
    factory.finalize()
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        load_weights(model, weights)
    return model


def load_weights(model, path):
    """Loads a `.weights.h5` or `.keras` file into `model`, with clear errors."""
    path = os.fspath(path)
    if not path.endswith((".weights.h5", ".keras")):
        raise ValueError(
            f"weights must be None or the path of a '.weights.h5' or '.keras' file saved from "
            f"the same builder and arguments, got {path!r}."
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path!r}.")
    model.load_weights(path)


def _is_positive_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0
