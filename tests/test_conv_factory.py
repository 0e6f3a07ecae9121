"""The builders' conv factory: topographic convs and their share of lambda from the
architecture data, made at construction, and a builder that strays from its data refused."""

import keras
import pytest
from keras_topo.applications import ResNet18
from keras_topo.applications.builder_utils import resolve_topography
from keras_topo.applications.conv_factory import ConvFactory

from keras_topo import TopographicConv2D, Topography


@pytest.mark.parametrize("reduction, share", [("mean", 0.6 / 2), ("sum", 0.6)])
def test_each_topographic_conv_is_made_with_its_share_of_lambda(reduction, share):
    factory = ConvFactory(
        Topography(weight=0.6, reduction=reduction),
        {"a": 4, "b": 4, "c": 4},
        ["a", "c"],
        "all",
        "fan_out",
    )
    x = keras.Input((6, 6, 1))
    made = {}
    for name in ("a", "b", "c"):
        x = factory.conv(x, 4, 3, name)
        made[name] = x._keras_history.operation
    assert isinstance(made["a"], TopographicConv2D) and isinstance(made["c"], TopographicConv2D)
    assert not isinstance(made["b"], TopographicConv2D)
    # Set when the layer is made, before the graph is complete.
    assert made["a"].topographic_weight == made["c"].topographic_weight == pytest.approx(share)
    factory.finalize()


def test_a_builder_that_strays_from_its_architecture_data_is_refused():
    factory = ConvFactory(None, {"a": 4, "b": 4}, None, "all", "fan_out")
    factory.conv(keras.Input((6, 6, 1)), 4, 3, "a")
    with pytest.raises(RuntimeError, match="disagree"):
        factory.finalize()  # "b" was declared, never made
    factory = ConvFactory(None, {"a": 4}, None, "all", "fan_out")
    factory.conv(keras.Input((6, 6, 1)), 5, 3, "a")
    with pytest.raises(RuntimeError, match="disagree"):
        factory.finalize()  # 5 filters made, 4 declared


def test_the_topography_is_resolved_once_and_the_old_keyword_is_deprecated():
    settings = Topography("nested", weight=0.2)
    assert resolve_topography(settings, {}) is settings  # passed through, not rebuilt
    with pytest.warns(DeprecationWarning, match="topographic_weight"):
        assert resolve_topography("grid", {"topographic_weight": 0.5}) == Topography(weight=0.5)
    with pytest.raises(ValueError, match="not both"):
        resolve_topography("grid", {"topographic_weight": 0.5, "weight": 0.5})
    # The baseline's settings are checked, then dropped.
    assert resolve_topography(None, {"reduction": "sum"}) is None
    with pytest.raises(ValueError, match="reduction"):
        resolve_topography(None, {"reduction": "max"})
    model = ResNet18((8, 8, 3), topography=settings, width_multiplier=0.0625)
    assert {layer.topography for layer in model.layers if hasattr(layer, "positions")} == {settings}
