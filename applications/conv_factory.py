"""Layer factory shared by the builders: plain or topographic convs, initialisers, batch norm.

A builder states its convs as data (`conv_widths`: `{name: filters}`) and asks the factory for
every conv by its (stable) name; the factory knows from that data, before any layer is made,
which convs are a `TopographicConv2D` (the others a plain `FastConv2D`: Keras' Conv2D without
the torch backend's layout copies; batch norms are `FastBatchNormalization`) and each one's
share of lambda, and `finalize` checks that the builder made exactly the declared convs.
"""

import keras

from keras_topo.fast_layers import FastBatchNormalization, FastConv2D
from keras_topo.topographic_conv import TopographicConv2D

BN_MOMENTUM = 0.9  # Keras convention (weight of the old statistics); torch's momentum=0.1.
BN_EPSILON = 1e-5


class ConvFactory:
    """Creates the convs and batch norms of one model.

    Args:
        topography: None (every conv a plain `Conv2D`) or the model's `keras_topo.Topography`
            (`builder_utils.resolve_topography` builds it once from the builder's arguments).
        widths: the builder's `{conv name: filters}` of every conv (`conv_widths`).
        topographic_layers: None (the builder's `paper_layers`), "all" (every conv), a list of
            conv names, or a predicate `name -> bool` (`topographic_names`).
        paper_layers: the conv names the paper made topographic, or "all".
        conv_init_mode: "fan_out" (ResNet, VGG) or "fan_in" (DenseNet) for the Kaiming normal
            initialisation of the conv kernels.

    Each topographic conv is made with its share of lambda, `topography.layer_weight(L)` for
    the `L` topographic convs the data declares.
    """

    def __init__(self, topography, widths, topographic_layers, paper_layers, conv_init_mode):
        self.topography = topography
        self.widths = dict(widths)
        self.conv_init_mode = conv_init_mode
        # Chosen for the baseline too, so that a misspelt layer name is never ignored.
        names = topographic_names(self.widths, topographic_layers, paper_layers)
        if topography is not None and not names:
            raise ValueError(
                "topographic_layers selected no conv layer; pass None for the paper's layers, "
                "'all', or names among " + str(list(self.widths)) + "."
            )
        self._topographic = set(names) if topography is not None else set()
        self._layer_weight = None if topography is None else topography.layer_weight(len(names))
        self._made = {}  # conv name -> filters, in the order the builder made them

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
        self._made[name] = filters
        if name in self._topographic:
            layer = TopographicConv2D(
                **kwargs, topography=self.topography, topographic_weight=self._layer_weight
            )
        else:
            layer = FastConv2D(**kwargs)
        return layer(x)

    @staticmethod
    def batch_norm(x, name):
        """Batch norm as torch's `BatchNorm2d` defaults (gamma 1, beta 0)."""
        return FastBatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)(x)

    def finalize(self):
        """Checks that the builder made exactly the convs its `widths` declares (names and
        filters), so the architecture as data (`topographic_layer_specs`) is the model's."""
        if self._made != self.widths:
            raise RuntimeError(
                f"The builder made the convs {self._made}, its conv_widths declares "
                f"{self.widths}: the builder and its architecture data disagree."
            )


def topographic_names(widths, topographic_layers, paper_layers):
    """The names of `widths` (`{conv name: filters}`, in order) that `topographic_layers`
    chooses (None: `paper_layers`); `ValueError` for a listed name that is not a conv."""
    chosen = paper_layers if topographic_layers is None else topographic_layers
    selected = name_selector(chosen)
    unknown = sorted(set(chosen) - set(widths)) if _is_name_list(chosen) else []
    if unknown:
        raise ValueError(
            f"topographic_layers names layers that are not convs of this model: {unknown}. "
            f"Conv layers are: {list(widths)}."
        )
    return [name for name in widths if selected(name)]


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
