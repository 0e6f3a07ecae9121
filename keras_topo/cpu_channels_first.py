"""channels_first convolutions on TensorFlow's CPU kernels, whatever oneDNN's state.

TensorFlow's own CPU convolutions support only channels_last ("The Conv2D op currently only
supports the NHWC tensor format on the CPU"); channels_first runs on CPU only through its
oneDNN kernels, which TF turns on by default only on CPUs with AVX-512 VNNI/BF16/AMX (or with
`TF_ENABLE_ONEDNN_OPTS=1`). Keras' own `Conv1D/2D/3D(data_format="channels_first")` fail
the same way there (TF 2.21, Keras 3.15). keras-topo's convolutions (`TopographicConv1D/2D/3D`,
`FastConv2D/3D`) run that case in channels_last between two transposes instead.
"""

import keras


def runs_channels_last(data_format):
    """Whether a `data_format` convolution must run as channels_last here: channels_first on
    the TensorFlow backend with no GPU (every convolution is placed on the CPU)."""
    if data_format != "channels_first" or keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return not tf.config.list_logical_devices("GPU")


class CPUChannelsFirstMixin:
    """Runs a channels_first convolution layer's call on channels_last tensors where
    `runs_channels_last` says so. Input `(B, C_in, *spatial)`, output `(B, filters, *spatial')`,
    as the layer's; its weights and config are unchanged.

    The layer's own call (padding, bias, activation) runs with `data_format` set to
    channels_last for that call only, on the input moved to `(B, *spatial, C_in)`; its output
    is moved back.
    """

    def call(self, inputs):
        if not runs_channels_last(self.data_format):
            return super().call(inputs)
        self.data_format = "channels_last"
        try:
            outputs = super().call(keras.ops.moveaxis(inputs, 1, -1))
        finally:
            self.data_format = "channels_first"
        return keras.ops.moveaxis(outputs, -1, 1)
