"""Layer factory shared by the builders: plain or topographic convs, initialisers, batch norm.

A builder asks the factory for every conv by its (stable) name; the factory decides from the
name whether the layer is a `TopographicConv2D` or a plain `FastConv2D` (Keras' Conv2D without
the torch backend's layout copies; batch norms are `FastBatchNormalization`), and once the graph
is complete (`finalize`) gives each topographic layer its share of lambda.
"""

import keras

from keras_topo.fast_layers import FastBatchNormalization, FastConv2D
from keras_topo.topographic_conv import TopographicConv2D
from keras_topo.topography import Topography

BN_MOMENTUM = 0.9  # Keras convention (weight of the old statistics); torch's momentum=0.1.
BN_EPSILON = 1e-5
# Old builder argument names of `Topography` fields.
_ALIASES = {"topographic_weight": "weight"}


class ConvFactory:
    """Creates the convs and batch norms of one model.

    Args:
        topography: None (all plain `Conv2D`), a `keras_topo.Topography` or its scheme name.
        topography_settings: dict of `Topography` fields replacing those of `topography`
            (`topographic_weight` is accepted for `weight`); ignored for the baseline.
        topographic_layers: None (the builder's `paper_layers`), "all" (every conv), a list of
            conv names, or a predicate `name -> bool`.
        paper_layers: the conv names the paper made topographic, or "all".
        conv_init_mode: "fan_out" (ResNet, VGG) or "fan_in" (DenseNet) for the Kaiming normal
            initialisation of the conv kernels.
    """

    def __init__(
        self, topography, topography_settings, topographic_layers, paper_layers, conv_init_mode
    ):
        settings = {_ALIASES.get(key, key): value for key, value in topography_settings.items()}
        # Built for the baseline too, so that a misspelt or invalid setting is never ignored.
        settings = Topography.coerce(topography, **settings)
        self.topography = None if topography is None else settings
        self.conv_init_mode = conv_init_mode
        self._selector = name_selector(
            paper_layers if topographic_layers is None else topographic_layers
        )
        self._requested = (
            set(topographic_layers)
            if topographic_layers is not None and _is_name_list(topographic_layers)
            else set()
        )
        self.conv_names = []
        self.topographic = []

    def conv(self, x, filters, kernel_size, name, strides=1, use_bias=False):
        """Conv with torch's symmetric padding `kernel_size // 2`, applied to `x`.

        Stride 1 uses Keras' "same" (symmetric for odd kernels); a strided conv gets an explicit
        `ZeroPadding2D` (named `<name>_pad`) and "valid", because Keras' strided "same" pads
        only the bottom/right side where torch pads both.
        """
        pad = kernel_size // 2
        if strides > 1 and pad > 0:
            x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
            padding = "valid"
        else:
            padding = "same"
        kwargs = dict(
            filters=filters,
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            use_bias=use_bias,
            kernel_initializer=keras.initializers.VarianceScaling(
                scale=2.0, mode=self.conv_init_mode, distribution="untruncated_normal"
            ),
            bias_initializer="zeros",
            name=name,
        )
        self.conv_names.append(name)
        if self.topography is not None and self._selector(name):
            layer = TopographicConv2D(**kwargs, topography=self.topography)
            self.topographic.append(layer)
        else:
            layer = FastConv2D(**kwargs)
        return layer(x)

    @staticmethod
    def batch_norm(x, name):
        """Batch norm as torch's `BatchNorm2d` defaults (gamma 1, beta 0)."""
        return FastBatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)(x)

    def finalize(self):
        """Checks the selection and sets each topographic layer's weight (call once built)."""
        unknown = sorted(self._requested - set(self.conv_names))
        if unknown:
            raise ValueError(
                f"topographic_layers names layers that are not convs of this model: {unknown}. "
                f"Conv layers are: {self.conv_names}."
            )
        if self.topography is None:
            return
        if not self.topographic:
            raise ValueError(
                "topographic_layers selected no conv layer; pass None for the paper's layers, "
                "'all', or names among " + str(self.conv_names) + "."
            )
        weight = self.topography.layer_weight(len(self.topographic))
        for layer in self.topographic:
            # Set after construction because L is only known once the graph is complete; the
            # layer reads it at call time and in get_config.
            layer.topographic_weight = weight


def _is_name_list(value):
    return isinstance(value, (list, tuple, set, frozenset))


def name_selector(layers):
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(
                f"topographic_layers must be None, 'all', a list of layer names or a predicate "
                f"on names, got the string {layers!r} (wrap a single name in a list)."
            )
        return lambda name: True
    if callable(layers):
        return layers
    if _is_name_list(layers):
        names = set(layers)
        return lambda name: name in names
    raise ValueError(
        f"topographic_layers must be None, 'all', a list of layer names or a predicate on names, "
        f"got {layers!r}."
    )
