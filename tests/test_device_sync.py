"""No host sync in the training step: each objective's loss, its gradient and the fast layers
compile into one graph under `torch.compile(fullgraph=True)`.

A graph break (a Python branch on a tensor value, a data-dependent `cond`, `.item()`) is where
a GPU step would stop to copy a value to the host. TorchDynamo finds the same breaks whatever
compiler follows it, so the tests use the cheapest: "aot_eager" traces the backward graph too
(no code generation), "eager" the forward only.
"""

import keras
import numpy as np
import pytest

from keras_topo import positions
from keras_topo.fast_layers import FastBatchNormalization, FastConv2D
from keras_topo.objectives import objective_loss

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="torch.compile needs the torch backend"
)


def compile_forward_and_backward(function, *inputs, backend="aot_eager"):
    """`function(*inputs)` (a scalar) compiled with fullgraph=True, then differentiated: the
    loss and the gradients of the inputs, numpy."""
    import torch

    torch._dynamo.reset()
    tensors = [torch.tensor(x, requires_grad=True) for x in inputs]
    loss = torch.compile(function, fullgraph=True, backend=backend)(*tensors)
    loss.backward()
    return float(loss.detach()), [t.grad.numpy() for t in tensors]


def eager_forward_and_backward(function, *inputs):
    import torch

    tensors = [torch.tensor(x, requires_grad=True) for x in inputs]
    loss = function(*tensors)
    loss.backward()
    return float(loss.detach()), [t.grad.numpy() for t in tensors]


def assert_compiles_to_eager_values(function, *inputs):
    compiled_loss, compiled_grads = compile_forward_and_backward(function, *inputs)
    loss, grads = eager_forward_and_backward(function, *inputs)
    np.testing.assert_allclose(compiled_loss, loss, rtol=1e-5)
    for compiled, eager in zip(compiled_grads, grads, strict=True):
        assert np.all(np.isfinite(compiled))
        np.testing.assert_allclose(compiled, eager, rtol=1e-4, atol=1e-7)


def test_a_data_dependent_cond_fails_the_check():
    """The check detects the overflow guard the loss used to have (`ops.cond` on a value)."""
    import torch

    def guarded(y):
        squares = keras.ops.sum(keras.ops.square(y), axis=0)
        y = keras.ops.cond(keras.ops.all(keras.ops.isfinite(squares)), lambda: y, lambda: y / 2)
        return keras.ops.sum(y)

    with pytest.raises(torch._dynamo.exc.Unsupported, match="[Dd]ata-dependent"):
        compile_forward_and_backward(guarded, np.ones((3, 2), "float32"), backend="eager")


def test_activation_loss_both_forms_compile_in_one_graph():
    """The direct `(B, C, C)` form (C <= HW) and the Gram-identity form (C > HW), with a zero
    channel and one near float32's maximum (the rescaling that replaced the guard)."""
    target = positions.target_similarity(positions.grid(6))
    direct = np.random.randn(2, 3, 3, 6).astype("float32")
    direct[..., 1] = 0.0
    identity = np.random.randn(2, 2, 2, 6).astype("float32")
    identity[..., 2] *= 1e38

    def both(direct, identity):
        return objective_loss("activation", direct, None, target) + objective_loss(
            "activation", identity, None, target
        )

    assert_compiles_to_eager_values(both, direct, identity)


def test_spatial_loss_compiles_in_one_graph():
    target = positions.target_similarity(positions.grid(6))
    y = np.random.randn(2, 3, 3, 6).astype("float32")
    assert_compiles_to_eager_values(lambda y: objective_loss("spatial", y, None, target), y)


def test_weights_loss_compiles_in_one_graph():
    kernel = np.random.randn(3, 3, 2, 12).astype("float32")
    assert_compiles_to_eager_values(
        lambda k: objective_loss("weights", None, k, None, shrink_factor=(1.5, 2)), kernel
    )


def test_fast_conv_and_batch_norm_training_compile_in_one_graph():
    """FastConv2D into FastBatchNormalization in training mode, moving statistics included."""
    conv = FastConv2D(4, 3, padding="same")
    norm = FastBatchNormalization()
    x = np.random.randn(2, 5, 5, 3).astype("float32")
    conv.build(x.shape)
    norm.build((2, 5, 5, 4))

    def step(x):
        return keras.ops.sum(keras.ops.square(norm(conv(x), training=True)))

    moving_mean = keras.ops.convert_to_numpy(norm.moving_mean)
    compiled_loss, (compiled_grad,) = compile_forward_and_backward(step, x)
    compiled_mean = keras.ops.convert_to_numpy(norm.moving_mean)
    assert not np.allclose(compiled_mean, moving_mean)  # the statistics moved in the graph
    norm.moving_mean.assign(moving_mean)
    loss, (grad,) = eager_forward_and_backward(step, x)
    np.testing.assert_allclose(compiled_loss, loss, rtol=1e-5)
    np.testing.assert_allclose(compiled_grad, grad, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(compiled_mean, keras.ops.convert_to_numpy(norm.moving_mean))


def test_topographic_conv_call_with_its_loss_compiles_in_one_graph():
    """A whole TopographicConv2D call (conv, loss, `add_loss`) in one graph: the loss recorder
    stays out of compiled steps, and the layer's loss equals the eager one."""
    from keras_topo import TopographicConv2D

    conv = TopographicConv2D(4, 3, padding="same", topography="grid")
    x = np.random.randn(2, 5, 5, 3).astype("float32")
    conv.build(x.shape)

    def step(x):
        y = conv(x, training=True)
        return keras.ops.sum(keras.ops.square(y)) + conv.losses[0]

    assert_compiles_to_eager_values(step, x)
