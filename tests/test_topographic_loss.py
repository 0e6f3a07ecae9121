"""The loss against the paper's equation written as a plain per-pair loop."""

import keras
import numpy as np
import pytest
from reference_loss import reference_loss

from keras_topo import positions, topographic_loss


def loss_value(y, **kwargs):
    return float(
        keras.ops.convert_to_numpy(topographic_loss(keras.ops.convert_to_tensor(y), **kwargs))
    )


@pytest.mark.parametrize(
    "shape",
    [
        (3, 6, 5, 4),  # C <= HW: direct (B, C, C) similarities
        (3, 2, 2, 12),  # C > HW: Gram identities, no (B, C, C) tensor
        (2, 1, 1, 5),  # 1x1 maps
    ],
)
@pytest.mark.parametrize("scheme, distance", [("grid", "euclidean"), ("circle", "l1")])
def test_matches_per_pair_loop(shape, scheme, distance):
    y = np.random.randn(*shape).astype("float32")
    pos = positions.get(scheme, shape[-1])
    expected = reference_loss(y, pos, distance)
    got = loss_value(y, positions=pos, distance=distance)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_channels_first_equals_channels_last():
    y = np.random.randn(2, 3, 3, 16).astype("float32")
    pos = positions.grid(16)
    last = loss_value(y, positions=pos)
    first = loss_value(np.moveaxis(y, -1, 1), positions=pos, data_format="channels_first")
    np.testing.assert_allclose(first, last, rtol=1e-6)


@pytest.mark.parametrize("shape", [(2, 4, 4, 6), (2, 2, 2, 10)])
def test_zero_channels_give_finite_loss(shape):
    y = np.random.randn(*shape).astype("float32")
    y[..., 1] = 0.0
    y[1] = 0.0  # a whole sample of dead channels
    pos = positions.grid(shape[-1])
    got = loss_value(y, positions=pos)
    assert np.isfinite(got)
    np.testing.assert_allclose(got, reference_loss(y, pos), rtol=1e-5)


def test_float16_input_accumulates_in_float32():
    y = (1e3 * np.random.randn(2, 4, 4, 8)).astype("float16")
    pos = positions.grid(8)
    got = topographic_loss(keras.ops.convert_to_tensor(y), positions=pos)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    np.testing.assert_allclose(
        float(keras.ops.convert_to_numpy(got)), reference_loss(y.astype("float32"), pos), rtol=1e-3
    )


def test_needs_positions_or_target():
    y = keras.ops.ones((1, 2, 2, 4))
    with pytest.raises(ValueError, match="exactly one"):
        topographic_loss(y)
    with pytest.raises(ValueError, match="describe 5 channels"):
        topographic_loss(y, positions=positions.grid(5))
