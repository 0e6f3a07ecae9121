"""`FastConv2D / 3D` and `FastBatchNormalization`: Keras' layers on the backend's fused kernels.

On the torch backend Keras copies a channels_last convolution's input twice (NHWC to
contiguous NCHW, then to channels_last memory) before `conv2d`, and runs batch normalization
as about ten separate element-wise ops and reductions, each with its own autograd node
(`tools/upstream_repros/repro_torch_backend_layers.py`). These subclasses hand torch the same memory as a
channels_last view (no copy) and call its single fused batch-norm kernel. On TensorFlow and
JAX they are Keras' layers unchanged: TF's fused batch norm measured no faster in ResNet-18
training here, and XLA fuses the element-wise ops itself.

Everything else is Keras': weights, config, `.keras` / `.weights.h5` files (each class is
named as the Keras layer it extends, which is how Keras' weights files address layers),
outputs and moving statistics (equal to 1e-5, tested on every backend), pruning and export.
`strip_topography` turns them back into Keras' own classes. Hand-written because Keras has no
fused path on torch; the kernels are torch's own (`torch.nn.functional.conv2d`,
`torch.native_batch_norm`). The builders use them; `keras_topo.use_fast_layers(model)` swaps
them into a user's functional or Sequential model.
"""

import keras

from keras_topo.cpu_channels_first import CPUChannelsFirstMixin

# Torch's convolution function per spatial rank (Conv1D's call bypasses `convolution_op`).
_TORCH_CONVOLUTIONS = {2: "conv2d", 3: "conv3d"}
_fused_kernels = {"enabled": True}


def use_fused_kernels(enabled=True):
    """Turns the fused kernels on (default) or off for every fast layer of this process: off,
    each runs Keras' own code, e.g. to compare speed or to rule the kernels out of a bug."""
    _fused_kernels["enabled"] = bool(enabled)


def _fused():
    return _fused_kernels["enabled"] and keras.backend.backend() == "torch"


def _symmetric_padding(padding, spatial_shape, kernel_size, strides, dilation_rate):
    """Torch's per-side padding equal to Keras' `padding`, or None where Keras pads unevenly.

    "same" pads `(ceil(n / s) - 1) * s + d * (k - 1) + 1 - n` in all along each axis, the
    larger half at the end (TensorFlow's rule, which Keras follows on every backend).
    """
    if padding == "valid":
        return [0] * len(kernel_size)
    if padding != "same":
        return None
    sides = []
    for n, k, s, d in zip(spatial_shape, kernel_size, strides, dilation_rate, strict=True):
        total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
        if total % 2:
            return None  # Keras' own path pads the end more
        sides.append(total // 2)
    return sides


class FastConvolutionMixin:
    """Replaces Keras' torch convolution by one on a channels_last view of the input."""

    def convolution_op(self, inputs, kernel):
        if not _fused() or self.data_format != "channels_last":
            return super().convolution_op(inputs, kernel)
        padding = _symmetric_padding(  # torch tensors have every dimension known
            self.padding, inputs.shape[1:-1], self.kernel_size, self.strides, self.dilation_rate
        )
        if padding is None:
            return super().convolution_op(inputs, kernel)
        import torch

        convolution = getattr(torch.nn.functional, _TORCH_CONVOLUTIONS[self.rank])
        # (B, *spatial, C) viewed as (B, C, *spatial) with channels_last strides: no copy.
        images = torch.movedim(keras.ops.convert_to_tensor(inputs), -1, 1)
        # Keras' (*spatial, C_in / groups, filters) viewed as torch's (filters, C_in / groups,
        # *spatial).
        weights = torch.movedim(keras.ops.convert_to_tensor(kernel), (-1, -2), (0, 1))
        outputs = convolution(
            images,
            weights,
            stride=self.strides,
            padding=padding,
            dilation=self.dilation_rate,
            groups=self.groups,
        )
        return torch.movedim(outputs, 1, -1)


@keras.saving.register_keras_serializable(package="keras_topo", name="FastConv2D")
class Conv2D(CPUChannelsFirstMixin, FastConvolutionMixin, keras.layers.Conv2D):
    """`keras.layers.Conv2D` without the torch backend's layout copies. Input
    `(B, H, W, C_in)`, output `(B, H', W', filters)`; arguments as Conv2D's."""


@keras.saving.register_keras_serializable(package="keras_topo", name="FastConv3D")
class Conv3D(CPUChannelsFirstMixin, FastConvolutionMixin, keras.layers.Conv3D):
    """`keras.layers.Conv3D` without the torch backend's layout copies. Input
    `(B, D, H, W, C_in)`, output `(B, D', H', W', filters)`; arguments as Conv3D's."""


@keras.saving.register_keras_serializable(package="keras_topo", name="FastBatchNormalization")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` on torch's fused kernel. Input `(B, ..., C)` (any
    `axis`), output of the same shape; arguments as BatchNormalization's.

    Training normalizes with the batch's mean and biased variance and moves the moving
    statistics by `momentum` exactly as Keras does. A mask, `renorm`, `synchronized` or float64
    inputs take Keras' own path.
    """

    def call(self, inputs, training=None, mask=None):
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        if (
            not _fused()
            or mask is not None
            or self.renorm
            or self.synchronized
            or compute_dtype != "float32"
        ):
            return super().call(inputs, training=training, mask=mask)
        import torch

        # Channels moved to axis 1, torch's layout: a view, no copy.
        x = torch.movedim(keras.ops.convert_to_tensor(inputs, "float32"), self.axis, 1)
        gamma = keras.ops.convert_to_tensor(self.gamma) if self.scale else None
        beta = keras.ops.convert_to_tensor(self.beta) if self.center else None
        if training and self.trainable:
            outputs, mean, inverse_std = torch.native_batch_norm(
                x, gamma, beta, None, None, True, 0.0, self.epsilon
            )
            # The kernel returns 1 / sqrt(var + eps) of the biased variance Keras uses.
            variance = (inverse_std.detach() ** -2 - self.epsilon).clamp_min(0.0)
            for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
                moving.assign(moving * self.momentum + batch.detach() * (1.0 - self.momentum))
        else:
            outputs = torch.nn.functional.batch_norm(
                x,
                keras.ops.convert_to_tensor(self.moving_mean),
                keras.ops.convert_to_tensor(self.moving_variance),
                gamma,
                beta,
                training=False,
                eps=self.epsilon,
            )
        return keras.ops.cast(torch.movedim(outputs, 1, self.axis), self.compute_dtype)


FastConv2D, FastConv3D, FastBatchNormalization = Conv2D, Conv3D, BatchNormalization

# Each fast class and the Keras class it extends: one registry for swapping both ways.
FAST_CLASSES = {
    keras.layers.Conv2D: FastConv2D,
    keras.layers.Conv3D: FastConv3D,
    keras.layers.BatchNormalization: FastBatchNormalization,
}
KERAS_CLASSES = {fast: plain for plain, fast in FAST_CLASSES.items()}
