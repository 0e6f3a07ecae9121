"""`TopographicConv1D / 2D / 3D`: Keras convolutions whose output channels sit on a map.

Each is the Keras layer itself (a subclass) with one addition: every call adds
`topographic_weight * loss(pre-activation output)` with `add_loss`, so the term is part of
`model.fit`'s loss and of `model.losses`. No variable is added: weights interchange both ways
with the plain layer (`set_weights`, `.weights.h5`, `.keras`) and LoRA behaves as on it.
"""

import keras
import numpy as np

from keras_topo import loss_recording, objectives
from keras_topo.cpu_channels_first import CPUChannelsFirstMixin
from keras_topo.fast_layers import FAST_CLASSES, FastConvolutionMixin
from keras_topo.topography import Topography

# Old flat keyword arguments, folded into the `Topography` (configs saved before round 2).
_LEGACY_FIELDS = ("dimension", "distance", "nested_factor")


class TopographicMixin:
    """The topographic part shared by the topographic convolutions.

    Positional arguments are the Keras layer's, in its order; the topographic ones are
    keyword-only:

    Args:
        topography: a `keras_topo.Topography`, a scheme name, or explicit positions
            `(filters, dimension)`; None: `Topography()` (2D grid, the paper's loss).
        topographic_weight: this layer's factor on its loss; None: `topography.weight`
            (a lone layer's lambda). `make_topographic` and the builders set `weight / L`
            for the paper's mean over `L` layers.

    Attributes:
        positions: float32 `(filters, dimension)`, where each output channel sits.
    """

    def __init__(self, *args, topography=None, topographic_weight=None, **kwargs):
        legacy = {key: kwargs.pop(key) for key in _LEGACY_FIELDS if key in kwargs}
        super().__init__(*args, **kwargs)
        self.topography = Topography.coerce(topography, **legacy)
        if topographic_weight is None:
            topographic_weight = self.topography.weight
        # Validated by the settings object, the one place that checks a weight.
        self.topographic_weight = self.topography.replace(weight=topographic_weight).weight
        self.positions = self.topography.positions(self.filters)
        if self.topography.objective == "weights" and self.filters >= 2:
            objectives.validate_shrink_factor(self.topography.shrink_factor, self.filters)
        self._target = self.topography.target(self.filters)
        self._neighbourhood_seed = None
        if self.topography.neighbourhoods is not None and self.filters >= 2:
            self._neighbour_table = objectives.neighbour_table(
                self.positions, self.topography.radius, self.topography.distance
            )
            self._neighbourhood_seed = keras.random.SeedGenerator(name="neighbourhood_seed")

    def call(self, inputs):
        # The Keras layer's own call without its activation gives the pre-activation output
        # (its causal padding, LoRA and bias handling included); the activation follows.
        activation, self.activation = self.activation, None
        try:
            outputs = super().call(inputs)
        finally:
            self.activation = activation
        self.add_topographic_loss(outputs, self.kernel, self.data_format)
        if activation is not None:
            return activation(outputs)
        return outputs

    def add_topographic_loss(self, outputs, kernel, data_format="channels_last"):
        """Adds (and records) `topographic_weight * loss` of the pre-activation `outputs`;
        `kernel` `(..., C_in, filters)` serves the "weights" objective."""
        if self.filters < 2:  # a layer pruned to one channel: no pair of channels, no loss
            loss = keras.ops.zeros((), "float32")
        else:
            loss = objectives.objective_loss(
                self.topography.objective,
                outputs,
                kernel=kernel,
                target=self._target,
                shrink_factor=self.topography.shrink_factor,
                data_format=data_format,
                neighbourhoods=self._neighbourhoods(),
            )
        self.add_weighted_loss(loss)

    def add_weighted_loss(self, loss):
        """Adds `topographic_weight * loss` (unweighted `loss` recorded, `loss_recording`)."""
        self.add_loss(self.topographic_weight * loss)
        loss_recording.record(self.name, loss)

    def _neighbourhoods(self):
        """The spatial objective's sampled neighbourhoods of this step (`Topography`'s
        `neighbourhoods` and `radius`), or None: all pairs."""
        if self._neighbourhood_seed is None:
            return None
        return objectives.sample_neighbourhoods(
            self._neighbour_table, self.topography.neighbourhoods, self._neighbourhood_seed
        )

    def narrowed_config(self, kept):
        """This layer's config with only the output channels `kept` (their positions stay)."""
        kept = np.asarray(kept, dtype="int64")
        config = self.get_config()
        config["filters"] = int(kept.size)
        config["topography"] = self.topography.replace(scheme=self.positions[kept]).get_config()
        return config

    def plain_config(self):
        """The config of the same layer without topography (for `strip_topography`)."""
        config = self.get_config()
        for key in ("topography", "topographic_weight"):
            config.pop(key)
        return config

    def get_config(self):
        config = super().get_config()
        config["topography"] = self.topography.get_config()
        config["topographic_weight"] = self.topographic_weight
        return config


@keras.saving.register_keras_serializable(package="keras_topo", name="TopographicConv1D")
class Conv1D(TopographicMixin, CPUChannelsFirstMixin, keras.layers.Conv1D):
    """`keras.layers.Conv1D` with a topographic loss. Input `(B, T, C_in)`, output
    `(B, T', filters)` (channels_last). See `TopographicMixin` for the keyword arguments."""


@keras.saving.register_keras_serializable(package="keras_topo", name="TopographicConv2D")
class Conv2D(TopographicMixin, CPUChannelsFirstMixin, FastConvolutionMixin, keras.layers.Conv2D):
    """`keras.layers.Conv2D` with a topographic loss. Input `(B, H, W, C_in)`, output
    `(B, H', W', filters)` (channels_last). See `TopographicMixin` for the keyword arguments.

    Example: `TopographicConv2D(64, 3, 1, "same", topography="grid")` (positional arguments as
    Conv2D's: filters, kernel_size, strides, padding, ...).
    """


@keras.saving.register_keras_serializable(package="keras_topo", name="TopographicConv3D")
class Conv3D(TopographicMixin, CPUChannelsFirstMixin, FastConvolutionMixin, keras.layers.Conv3D):
    """`keras.layers.Conv3D` with a topographic loss. Input `(B, D, H, W, C_in)`, output
    `(B, D', H', W', filters)` (channels_last). See `TopographicMixin` for the keyword arguments."""


# Keras' weights files address a layer by its class name (`saving_lib`), so each class is
# named as the plain layer it extends: weights files interchange both ways. Users know them
# by their exported names, registered for serialization too.
TopographicConv1D, TopographicConv2D, TopographicConv3D = Conv1D, Conv2D, Conv3D

# The plain Keras class of each topographic class: one registry for conversion both ways.
PLAIN_CLASSES = {
    TopographicConv1D: keras.layers.Conv1D,
    TopographicConv2D: keras.layers.Conv2D,
    TopographicConv3D: keras.layers.Conv3D,
}
# The classes `make_topographic` converts: Keras' and their fast twins (`FAST_CLASSES`).
TOPOGRAPHIC_CLASSES = {plain: topo for topo, plain in PLAIN_CLASSES.items()}
TOPOGRAPHIC_CLASSES.update(
    {
        fast: TOPOGRAPHIC_CLASSES[plain]
        for plain, fast in FAST_CLASSES.items()
        if plain in TOPOGRAPHIC_CLASSES
    }
)
