"""The fastest measured way to train on each Keras backend, used by default by the runner.

`compile_options()` gives the `Model.compile` arguments of the fast path for the current
backend and device; `benchmarks/bench_backends.py` measures it against each backend's default
and against native PyTorch, and the README's "Backends" section lists the figures. Choices,
each measured on a 2-core CPU (ResNet-18, batch 32-64, 32x32):

- TensorFlow: no XLA on CPU (XLA:CPU convolutions are several times slower than TF's oneDNN
  kernels); XLA ("auto") on GPU/TPU.
- JAX: always jit-compiled. Keras runs a JAX model eagerly, op by op, when
  `jit_compile=False` (2x slower per step and 3x longer warm-up than jit, measured at ResNet-18
  x0.5), which is what a CPU-wide "no XLA" rule would give.
- torch: eager. `jit_compile=True` (`torch.compile` of Keras' train step) was 2x slower per
  step after an 18-minute warm-up (ResNet-18 x0.5, loaded CPU); the time goes to Keras'
  unfused batch norm and layout copies (`benchmarks/profile_torch.py`), which it does not
  remove. And `OMP_WAIT_POLICY=PASSIVE` (`ENVIRONMENT`): torch's OpenMP threads otherwise spin
  at every barrier, and on a CPU shared with other processes a step became 10-30x slower
  than with threads that sleep (native torch ResNet-18 x0.5, batch 32, 2 cores:
  0.19 s passive against 1.9-7.4 s spinning). OpenMP reads it once, when torch is loaded, so
  this module sets it (unless already set) when imported, and `keras_topo` imports it before
  Keras imports its backend.
- torch, in the model: the builders' convs and batch norms are `keras_topo.fast_layers`
  (`FastConv2D`, `FastBatchNormalization`, and the topographic convs): torch's convolution on
  a channels_last view instead of Keras' two layout copies, and torch's fused batch norm
  instead of Keras' ~10 element-wise ops. Keras' own layers in a user's model are left as
  they are.

This module imports Keras only inside its functions, so that `keras_topo` can import it first.
"""

import os

BACKENDS = ("tensorflow", "jax", "torch")
# Process environment of the fast path: read when the backend's libraries load.
ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}


def apply_environment():
    """Sets each `ENVIRONMENT` variable the user has not set; call before importing torch."""
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)


apply_environment()  # On import: `keras_topo` imports this module before Keras.


def compile_options(backend=None, accelerator=None):
    """`Model.compile` keyword arguments of the fast path: `{"jit_compile": ...}`.

    Args:
        backend: "tensorflow", "jax" or "torch" (default: the current Keras backend).
        accelerator: whether a GPU/TPU is used (default: `has_accelerator(backend)`).
    """
    import keras

    backend = backend or keras.backend.backend()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if accelerator is None:
        accelerator = has_accelerator(backend)
    if backend == "jax":
        return {"jit_compile": True}
    if backend == "tensorflow":
        return {"jit_compile": "auto" if accelerator else False}
    return {"jit_compile": False}


def has_accelerator(backend=None):
    """Whether `backend` (default: the current one) sees a GPU or TPU."""
    import keras

    backend = backend or keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(
            tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU")
        )
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False
