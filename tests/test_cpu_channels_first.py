"""channels_first keras-topo convolutions equal their channels_last selves, with or without
TensorFlow's oneDNN kernels (without them TF's CPU convolutions support channels_last only)."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_topo

# (layer class, input shape channels_last (B, *spatial, C), extra arguments)
CASES = [
    (keras_topo.TopographicConv1D, (2, 7, 3), {"padding": "causal"}),
    (keras_topo.TopographicConv2D, (2, 6, 5, 3), {"strides": 2, "padding": "same"}),
    (keras_topo.TopographicConv3D, (2, 4, 4, 3, 3), {}),
    (keras_topo.FastConv2D, (2, 6, 5, 3), {"padding": "same", "activation": "relu"}),
    (keras_topo.FastConv3D, (2, 4, 4, 3, 3), {"strides": 2}),
]


@pytest.mark.parametrize("cls, shape, kwargs", CASES, ids=[c[0].__name__ for c in CASES])
def test_channels_first_equals_channels_last(cls, shape, kwargs):
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    last = cls(4, 3, **kwargs)
    expected = keras.ops.convert_to_numpy(last(x))
    first = cls(4, 3, data_format="channels_first", **kwargs)
    first.build((None, shape[-1], *shape[1:-1]))
    first.set_weights(last.get_weights())
    out = keras.ops.convert_to_numpy(first(np.moveaxis(x, -1, 1)))
    assert first.data_format == "channels_first"
    np.testing.assert_allclose(np.moveaxis(out, 1, -1), expected, atol=1e-5)
    if last.losses:  # topographic: the same loss, read on the channel axis of each layout
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(first.losses[0]),
            keras.ops.convert_to_numpy(last.losses[0]),
            rtol=1e-5,
        )


@pytest.mark.tf_only
def test_channels_first_runs_without_onednn():
    """This module's layer tests and `test_channels_first` pass in a process whose TensorFlow
    runs without oneDNN (`TF_ENABLE_ONEDNN_OPTS=0`, as TF's default on AVX2-only CPUs)."""
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{tests}/test_cpu_channels_first.py::test_channels_first_equals_channels_last",
            f"{tests}/test_topographic_conv2d.py::test_channels_first",
            f"{tests}/test_fast_path.py::test_onednn_state_of_this_process",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"{len(CASES) + 2} passed" in done.stdout
