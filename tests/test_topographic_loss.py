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


def loss_and_gradient(y, **kwargs):
    """The loss and its gradient with respect to `y` on the current backend (numpy out)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        y = tf.constant(y)
        with tf.GradientTape() as tape:
            tape.watch(y)
            loss = topographic_loss(y, **kwargs)
        return float(loss), tape.gradient(loss, y).numpy()
    if backend == "jax":
        import jax

        loss, grad = jax.value_and_grad(lambda t: topographic_loss(t, **kwargs))(y)
        return float(loss), np.asarray(grad)
    import torch

    y = torch.tensor(y, requires_grad=True)
    loss = topographic_loss(y, **kwargs)
    loss.backward()
    return float(loss.detach()), y.grad.numpy()


@pytest.mark.parametrize("shape", [(2, 3, 3, 4), (2, 2, 2, 6)])  # direct; Gram identities
def test_gradient_equals_finite_differences_of_the_per_pair_loop(shape):
    """The one-matmul Gram gradient against central differences of the float64 loop."""
    y = np.random.randn(*shape).astype("float32")
    pos = positions.grid(shape[-1])
    _, grad = loss_and_gradient(y, positions=pos)
    expected = np.zeros(y.size)
    step = 1e-5
    for index in range(y.size):
        delta = np.zeros(y.size)
        delta[index] = step
        delta = delta.reshape(shape)
        up = reference_loss(y.astype("float64") + delta, pos)
        down = reference_loss(y.astype("float64") - delta, pos)
        expected[index] = (up - down) / (2 * step)
    np.testing.assert_allclose(grad.ravel(), expected, rtol=2e-3, atol=2e-5)


@pytest.mark.parametrize("shape", [(2, 4, 4, 6), (2, 2, 2, 10)])
@pytest.mark.parametrize("magnitude", [1e19, 3e38])
def test_huge_outputs_give_the_scale_free_loss(shape, magnitude):
    """Cosine similarity ignores scale: up to float32's maximum the loss is the unit-scale one."""
    y = np.random.uniform(-1, 1, shape).astype("float32")
    y[..., 0] = np.sign(y[..., 0])  # channel 0 reaches +-1, so |y * magnitude| <= magnitude
    y[..., 1] *= 1e-3  # channels of very different scales in one output
    pos = positions.grid(shape[-1])
    huge = (y.astype("float64") * magnitude).astype("float32")
    assert np.all(np.isfinite(huge))
    got, grad = loss_and_gradient(huge, positions=pos)
    np.testing.assert_allclose(got, reference_loss(y, pos), rtol=1e-4)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("shape", [(2, 4, 4, 6), (2, 2, 2, 10)])
def test_zero_and_tiny_channels_have_finite_gradients(shape):
    y = np.random.randn(*shape).astype("float32")
    y[..., 1] = 0.0
    y[..., 2] *= 1e-30  # a nonzero channel far below the eps clamp: similarities ~ 0
    y[1] = 0.0
    pos = positions.grid(shape[-1])
    got, grad = loss_and_gradient(y, positions=pos)
    expected = y.copy()
    expected[..., 2] = 0.0  # the clamp makes it count as a zero channel
    np.testing.assert_allclose(got, reference_loss(expected, pos), rtol=1e-5)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mixed_precision_layer_adds_the_float32_loss_of_its_output(dtype):
    """Under `mixed_float16`/`mixed_bfloat16` the layer's loss is float32, finite and exact for
    the low-precision output it computed."""
    import keras_topo

    keras.config.set_dtype_policy(f"mixed_{dtype}")
    layer = keras_topo.TopographicConv2D(8, 3, padding="same", topographic_weight=1.0)
    x = keras.ops.convert_to_tensor(100.0 * np.random.randn(2, 6, 6, 3).astype("float32"))
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == dtype
    (loss,) = layer.losses
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    out = keras.ops.convert_to_numpy(keras.ops.cast(y, "float32"))
    np.testing.assert_allclose(
        float(keras.ops.convert_to_numpy(loss)), reference_loss(out, layer.positions), rtol=1e-4
    )


def compiled_loss_and_gradient(y, **kwargs):
    """`loss_and_gradient` under XLA: `tf.function(jit_compile=True)` or `jax.jit`."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def step(y):
            with tf.GradientTape() as tape:
                tape.watch(y)
                loss = topographic_loss(y, **kwargs)
            return loss, tape.gradient(loss, y)

        loss, grad = step(tf.constant(y))
        return float(loss), grad.numpy()
    import jax

    loss, grad = jax.jit(jax.value_and_grad(lambda t: topographic_loss(t, **kwargs)))(y)
    return float(loss), np.asarray(grad)


@pytest.mark.skipif(keras.backend.backend() == "torch", reason="XLA: TensorFlow and JAX")
@pytest.mark.parametrize("shape", [(2, 4, 4, 6), (2, 2, 2, 10)])
def test_xla_compiled_loss_is_exact_for_huge_zero_and_tiny_channels(shape):
    """XLA flushes subnormals to zero: the rescaling keeps every scale a normal float."""
    y = np.random.uniform(-1, 1, shape).astype("float32")
    y[..., 0] = np.sign(y[..., 0]) * 3e38
    y[..., 1] = 0.0
    y[..., 2] *= 1e-30
    y[..., 3] *= 1e-40  # subnormal input
    pos = positions.grid(shape[-1])
    got, grad = compiled_loss_and_gradient(y, positions=pos)
    expected = y.astype("float64")
    expected[..., 2:4] = 0.0  # below the eps clamp: they count as zero channels
    np.testing.assert_allclose(got, reference_loss(expected, pos), rtol=1e-4)
    assert np.all(np.isfinite(grad))
    eager, eager_grad = loss_and_gradient(y, positions=pos)
    np.testing.assert_allclose(got, eager, rtol=1e-6)
    np.testing.assert_allclose(grad, eager_grad, rtol=1e-4, atol=1e-30)
