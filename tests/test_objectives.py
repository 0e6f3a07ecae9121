"""The "weights" (TopoLoss) and "spatial" (TDANN) objectives against independent computations."""

import importlib.util
import math

import keras
import numpy as np
import pytest

from keras_topo import positions, topographic_loss
from keras_topo.objectives import (
    OBJECTIVES,
    objective_loss,
    sheet_positions,
    sheet_shape,
    validate_shrink_factor,
)


def value(x):
    return float(keras.ops.convert_to_numpy(x))


def oracle_resize(image, out_h, out_w, scale=None):
    """Bilinear resize of one `(H, W)` image, pixel by pixel (torch's align_corners=False)."""
    in_h, in_w = image.shape
    out = np.zeros((out_h, out_w))

    def taps(dst, in_size, out_size, scale):
        if in_size == out_size:
            return dst, dst, 0.0
        step = 1.0 / scale if scale else in_size / out_size
        src = max(step * (dst + 0.5) - 0.5, 0.0)
        lo = int(math.floor(src))
        return lo, min(lo + 1, in_size - 1), src - lo

    for i in range(out_h):
        r0, r1, a = taps(i, in_h, out_h, scale and scale[0])
        for j in range(out_w):
            c0, c1, b = taps(j, in_w, out_w, scale and scale[1])
            top = (1 - b) * image[r0, c0] + b * image[r0, c1]
            bottom = (1 - b) * image[r1, c0] + b * image[r1, c1]
            out[i, j] = (1 - a) * top + a * bottom
    return out


def oracle_topoloss(kernel, factor_h, factor_w):
    """TopoLoss as its paper writes it, with explicit loops over the sheet."""
    channels = kernel.shape[-1]
    height, width = sheet_shape(channels)
    sheet = kernel.reshape(-1, channels).T.reshape(height, width, -1).astype("float64")
    small = (math.floor(height / factor_h), math.floor(width / factor_w))
    smoothed = np.stack(
        [
            oracle_resize(
                oracle_resize(sheet[:, :, e], *small, scale=(1 / factor_h, 1 / factor_w)),
                height,
                width,
            )
            for e in range(sheet.shape[-1])
        ],
        axis=-1,
    )
    a, b = sheet.reshape(channels, -1), smoothed.reshape(channels, -1)
    cosine = np.sum(a * b, 1) / np.maximum(
        np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-8
    )
    return 1.0 - cosine.mean()


def oracle_spatial(y, pos):
    """TDANN's relative spatial loss with numpy's corrcoef, channels_last `y`."""
    samples = y.reshape(-1, y.shape[-1]).astype("float64")
    corr = np.corrcoef(samples.T)
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    rows, cols = np.triu_indices(len(pos), 1)
    return 1.0 - np.corrcoef(corr[rows, cols], 1.0 / (dist[rows, cols] + 1.0))[0, 1]


@pytest.mark.parametrize(
    "channels, factor",
    [(16, 2.0), (32, 3.0), (24, (2.0, 3.0)), (30, 2.5), (64, 1.5), (100, 4.0), (13, (1.0, 4.0))],
)
def test_weights_matches_loop_oracle(channels, factor):
    kernel = np.random.randn(3, 3, 4, channels).astype("float32")
    fh, fw = validate_shrink_factor(factor, channels)
    got = value(objective_loss("weights", None, kernel, None, shrink_factor=factor))
    np.testing.assert_allclose(got, oracle_topoloss(kernel, fh, fw), rtol=1e-5, atol=1e-6)


def test_weights_no_smoothing_is_zero_and_smooth_sheet_scores_lower():
    channels = 64
    kernel = np.random.randn(1, 1, 8, channels).astype("float32")
    assert value(objective_loss("weights", None, kernel, None, shrink_factor=1)) == pytest.approx(
        0.0, abs=1e-6
    )
    # Filters that vary slowly along the sheet lose little to smoothing; shuffled, they lose more.
    rows, cols = np.divmod(np.arange(channels), sheet_shape(channels)[1])
    smooth = np.stack([np.sin(rows / 3 + e) + np.cos(cols / 3 - e) for e in range(8)])
    smooth = smooth.reshape(1, 1, 8, channels).astype("float32")
    shuffled = smooth[..., np.random.permutation(channels)]
    assert value(objective_loss("weights", None, smooth, None, 2.0)) < 0.5 * value(
        objective_loss("weights", None, shuffled, None, 2.0)
    )


@pytest.mark.skipif(
    importlib.util.find_spec("topoloss") is None or importlib.util.find_spec("torch") is None,
    reason="needs the topoloss package (pip install topoloss==0.0.2 einops) and torch",
)
@pytest.mark.parametrize("channels, factor", [(16, 2.0), (48, (2.0, 3.0)), (60, 2.5), (128, 3.0)])
def test_weights_equals_topoloss_package(channels, factor):
    import torch
    from topoloss import LaplacianPyramid, TopoLoss
    from topoloss.cortical_sheet.common import find_cortical_sheet_size

    size = find_cortical_sheet_size(channels)
    assert sheet_shape(channels) == (size.height, size.width)
    kernel = np.random.randn(3, 3, 5, channels).astype("float32")
    net = torch.nn.Sequential(torch.nn.Conv2d(5, channels, 3))
    net[0].weight.data = torch.from_numpy(np.transpose(kernel, (3, 2, 0, 1)).copy())
    fh, fw = validate_shrink_factor(factor, channels)
    spec = LaplacianPyramid.from_layer(net, net[0], factor_h=fh, factor_w=fw)
    expected = TopoLoss(losses=[spec]).compute(net).item()
    got = value(objective_loss("weights", None, kernel, None, shrink_factor=factor))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_sheet_positions_are_row_major():
    pos = sheet_positions(12)  # 3 x 4 sheet
    assert sheet_shape(12) == (3, 4)
    np.testing.assert_allclose(pos[5], [1 / 3, 1 / 3])
    np.testing.assert_allclose(pos[11], [1, 2 / 3])
    np.testing.assert_allclose(sheet_positions(64), positions.grid(64))  # square: the grid


@pytest.mark.parametrize("shape", [(4, 5, 5, 6), (3, 7, 9), (2, 3, 3, 2, 5)])
def test_spatial_matches_corrcoef_oracle(shape):
    y = np.random.randn(*shape).astype("float32")
    y[..., 1] += 0.8 * y[..., 0]  # some correlated channels
    pos = positions.grid(shape[-1])
    target = positions.target_similarity(pos)
    got = value(objective_loss("spatial", y, None, target))
    np.testing.assert_allclose(got, oracle_spatial(y, pos), rtol=1e-4, atol=1e-5)
    first = np.moveaxis(y, -1, 1)
    got_first = value(objective_loss("spatial", first, None, target, data_format="channels_first"))
    np.testing.assert_allclose(got_first, got, rtol=1e-5, atol=1e-6)


def test_spatial_constant_channel_is_finite_with_finite_gradient():
    y = np.random.randn(2, 4, 4, 5).astype("float32")
    y[..., 2] = 0.0
    target = positions.target_similarity(positions.grid(5))
    loss = objective_loss("spatial", keras.ops.convert_to_tensor(y), None, target)
    assert np.isfinite(value(loss))


def test_spatial_huge_channels_give_the_scale_free_loss():
    """Correlations ignore each channel's scale: up to float32's maximum the loss is the
    unit-scale one (each channel is divided by a power of two first, no branch)."""
    y = np.random.uniform(-1, 1, (2, 4, 4, 5)).astype("float32")
    y[..., 0] = np.sign(y[..., 0])  # |y * 3e38| reaches 3e38
    pos = positions.grid(5)
    huge = (y.astype("float64") * np.array([3e38, 1e19, 1.0, 1e-3, 7.0])).astype("float32")
    assert np.all(np.isfinite(huge))
    got = value(objective_loss("spatial", huge, None, positions.target_similarity(pos)))
    np.testing.assert_allclose(got, oracle_spatial(y, pos), rtol=1e-4, atol=1e-5)


def test_activation_is_the_paper_loss():
    y = np.random.randn(2, 4, 4, 6).astype("float32")
    target = positions.target_similarity(positions.grid(6))
    assert value(objective_loss("activation", y, None, target)) == pytest.approx(
        value(topographic_loss(y, target=target)), rel=1e-6
    )


def test_registry_and_bad_input():
    assert OBJECTIVES == ("activation", "weights", "spatial")
    target = positions.target_similarity(positions.grid(4))
    y = np.zeros((1, 2, 2, 4), "float32")
    with pytest.raises(ValueError, match=r"Unknown objective 'topo'.*activation"):
        objective_loss("topo", y, None, target)
    with pytest.raises(ValueError, match="activity regularizer"):
        objective_loss("weights", y, None, target)
    with pytest.raises(ValueError, match=r"4x8 sheet of 32 channels.*\[1, 4\]"):
        validate_shrink_factor(5, 32)
    with pytest.raises(ValueError, match=r"1x13 sheet.*height factor must lie in \[1, 1\]"):
        validate_shrink_factor(2, 13)
    with pytest.raises(ValueError, match="number or a pair"):
        validate_shrink_factor((1, 2, 3), 32)
    with pytest.raises(ValueError, match="at least 3 channels"):
        objective_loss("spatial", np.zeros((1, 2, 2, 2), "float32"), None, target[:2, :2])
    with pytest.raises(ValueError, match="equally far apart"):
        circle = positions.target_similarity(positions.circle(3))
        objective_loss("spatial", np.random.randn(1, 2, 2, 3), None, circle)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_each_objective_trains_through_make_topographic(objective):
    """The layer adds `weight * objective_loss` of its own output/kernel, and fit lowers it."""
    import keras_topo

    plain = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            keras.layers.Conv2D(12, 3, padding="same", name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    settings = keras_topo.Topography(objective=objective, shrink_factor=2, weight=5.0)
    model = keras_topo.make_topographic(plain, topography=settings)
    conv = model.get_layer("conv")
    x = np.random.randn(32, 6, 6, 3).astype("float32")
    y = np.random.randint(0, 3, 32)

    def layer_loss():
        model(x)
        return value(sum(model.losses))

    probe = keras.Model(model.inputs[0], conv.output)
    target = positions.target_similarity(conv.positions)
    expected = objective_loss(objective, probe(x), conv.kernel, target, shrink_factor=2)
    before = layer_loss()
    assert before == pytest.approx(5.0 * value(expected), rel=1e-4)
    model.compile(keras.optimizers.SGD(0.02), keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(x, y, batch_size=16, epochs=8, verbose=0)
    assert layer_loss() < 0.9 * before
