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
  unfused batch norm and layout copies (`tools/profilers/profile_torch.py`), which it does not
  remove. And `OMP_WAIT_POLICY=PASSIVE` (`ENVIRONMENT`): torch's OpenMP threads otherwise spin
  at every barrier, and on a CPU shared with other processes a step became 10-30x slower
  than with threads that sleep (native torch ResNet-18 x0.5, batch 32, 2 cores:
  0.19 s passive against 1.9-7.4 s spinning).
- TensorFlow, process: `TF_ENABLE_ONEDNN_OPTS=1` (`ENVIRONMENT`). TF turns its oneDNN kernels
  on by default only on CPUs with AVX-512 VNNI/BF16/AMX; on an AVX2-only CPU a ResNet-18 step
  (batch 64) took 2.2 s without them, 0.57 s with them.

The process variables are read once, when TensorFlow or torch is imported, so they are set by
the `keras-topo` command before Keras loads (`keras_topo_launcher`); importing `keras_topo`
sets nothing. `settings()` records what a run used (result.json's "fast_path"), and
`warn_if_slow_kernels()` warns once when TensorFlow runs without oneDNN.
- torch, in the model: the builders' convs and batch norms are `keras_topo.fast_layers`
  (`FastConv2D`, `FastBatchNormalization`, and the topographic convs): torch's convolution on
  a channels_last view instead of Keras' two layout copies, and torch's fused batch norm
  instead of Keras' ~10 element-wise ops. Keras' own layers in a user's model are left as
  they are.

"""

import contextlib
import os
import sys
import warnings

import keras

from keras_topo_launcher import ENVIRONMENT, applied, apply_environment

BACKENDS = ("tensorflow", "jax", "torch")
# Keras dtype policies a run can train with. Each ran a topographic ResNet-18 train step on
# CPU with every backend (TF 2.21, JAX, torch 2.13; float16 convolutions included).
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
# OpenMP's thread settings (read when torch loads).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")
__all__ = [
    "BACKENDS",
    "ENVIRONMENT",
    "PRECISIONS",
    "SlowKernelsWarning",
    "apply_environment",
    "check_precision",
    "compile_options",
    "has_accelerator",
    "onednn_origin",
    "precision_policy",
    "settings",
    "settings_line",
    "tf_onednn_enabled",
    "warn_if_slow_kernels",
]


class SlowKernelsWarning(UserWarning):
    """TensorFlow runs without its oneDNN kernels: convolutions several times slower."""


def tf_onednn_enabled():
    """Whether this process's TensorFlow runs its oneDNN kernels; None if TF is not loaded.

    TensorFlow decides once, at import, from `TF_ENABLE_ONEDNN_OPTS` and the CPU.
    """
    if "tensorflow" not in sys.modules:
        return None
    # TF's own answer (what its tests use); there is no public API for it.
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def onednn_origin():
    """Where TensorFlow's oneDNN choice comes from: the user, keras-topo, or TF's CPU default."""
    value = os.environ.get(ONEDNN_VARIABLE)
    if value is None:
        return "TensorFlow's default for this CPU, TF_ENABLE_ONEDNN_OPTS unset"
    if applied.get(ONEDNN_VARIABLE) == value:
        return f"keras-topo's fast path, TF_ENABLE_ONEDNN_OPTS={value}"
    return f"the environment, TF_ENABLE_ONEDNN_OPTS={value}"


_warned = []  # one warning per process


def warn_if_slow_kernels():
    """Warns once per process (`SlowKernelsWarning`) if the TensorFlow backend runs without
    oneDNN (on JAX and torch, TensorFlow runs only the data pipelines)."""
    if keras.backend.backend() != "tensorflow" or tf_onednn_enabled() is not False or _warned:
        return
    _warned.append(True)
    warnings.warn(
        f"TensorFlow runs without its oneDNN kernels ({onednn_origin()}): convolutions take "
        "a path about 4x slower on CPUs without AVX-512 VNNI, and channels_first "
        "convolutions of Keras' own layers fail on CPU. Set "
        "TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow is imported (`export "
        "TF_ENABLE_ONEDNN_OPTS=1`, or `os.environ[...]` before `import keras`); the keras-topo "
        "command does it unless the variable is set. `keras-topo doctor` shows all settings.",
        SlowKernelsWarning,
        stacklevel=3,
    )


def check_precision(precision, backend=None):
    """Raises `ValueError` naming `precision` and the backend (default: the current one) unless
    the backend can train with that dtype policy (`PRECISIONS`)."""
    backend = backend or keras.backend.backend()
    if precision not in PRECISIONS:
        raise ValueError(
            f"--precision {precision!r} cannot run on the {backend} backend: choose one of "
            f"{', '.join(PRECISIONS)}."
        )


@contextlib.contextmanager
def precision_policy(precision):
    """Keras' global dtype policy set to `precision` inside the block, restored after it."""
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def settings(jit_compile, precision):
    """The settings a run trains with (result.json's "fast_path"): `jit_compile`, `precision`
    (the dtype policy's name), `tf_onednn` (None if TF is not loaded) and `omp_wait_policy`
    (None if unset)."""
    return {
        "jit_compile": jit_compile,
        "precision": precision,
        "tf_onednn": tf_onednn_enabled(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def settings_line():
    """One line naming the settings in effect in this process (the benchmarks print it), after
    `warn_if_slow_kernels()`."""
    warn_if_slow_kernels()
    onednn = {True: "on", False: "OFF", None: "not loaded yet"}[tf_onednn_enabled()]
    threads = ", ".join(f"{name}={os.environ.get(name)}" for name in THREAD_VARIABLES)
    return (
        f"settings in effect: backend {keras.backend.backend()}, TensorFlow oneDNN {onednn} "
        f"({onednn_origin()}), {threads}, dtype policy {keras.config.dtype_policy().name}"
    )


def compile_options(backend=None, accelerator=None):
    """`Model.compile` keyword arguments of the fast path: `{"jit_compile": ...}`.

    Args:
        backend: "tensorflow", "jax" or "torch" (default: the current Keras backend).
        accelerator: whether a GPU/TPU is used (default: `has_accelerator(backend)`).
    """
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
