"""The per-backend fast path: its choices, and the same losses on every backend with it."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras_topo.applications import ResNet18

from keras_topo.experiments import fast_path, run


@pytest.mark.parametrize(
    "backend, accelerator, expected",
    [
        ("tensorflow", False, False),  # XLA:CPU convolutions are slower than TF's own kernels
        ("tensorflow", True, "auto"),
        ("jax", False, True),  # never Keras' eager JAX
        ("jax", True, True),
        ("torch", False, False),
        ("torch", True, False),
    ],
)
def test_compile_options_per_backend(backend, accelerator, expected):
    assert fast_path.compile_options(backend, accelerator) == {"jit_compile": expected}


def test_compile_options_rejects_an_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        fast_path.compile_options("numpy", False)


def test_runner_compiles_with_the_fast_path():
    model = run.compile_model(
        ResNet18((8, 8, 3), 4, width_multiplier=0.0625), run.resolve_jit_compile("default")
    )
    if fast_path.has_accelerator():
        pytest.skip("checks the CPU choices")
    # On JAX a jitted step, not Keras' op-by-op eager JAX.
    assert (
        model.jit_compile
        is {"tensorflow": False, "jax": True, "torch": False}[keras.backend.backend()]
    )


_FIRST_TORCH_IMPORT = """
import builtins, os
seen, real_import = [], builtins.__import__
def spy(name, *args, **kwargs):
    if name == "torch" and not seen:
        seen.append(os.environ.get("OMP_WAIT_POLICY"))
    return real_import(name, *args, **kwargs)
builtins.__import__ = spy
import keras_topo
print(seen[0])
"""


@pytest.mark.parametrize("user_value", [None, "ACTIVE"])
def test_import_sets_the_openmp_wait_policy_before_torch_loads(user_value):
    env = {**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("OMP_WAIT_POLICY", None)
    if user_value:
        env["OMP_WAIT_POLICY"] = user_value
    done = subprocess.run(
        [sys.executable, "-c", _FIRST_TORCH_IMPORT], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # What torch's OpenMP runtime sees when it loads; a user's own setting is kept.
    assert done.stdout.strip().splitlines()[-1] == (user_value or "PASSIVE")


def training_losses():
    """Losses of two training steps (the second after the first's update) on fixed weights.

    A topographic ResNet-18 (x1/16 width, 16x16 inputs, lambda 1 summed over the paper's five
    layers); conv and dense kernels drawn from a seeded numpy generator (He-scaled), the
    classifier's bias zero, batch norms at their deterministic defaults; compiled with the
    fast path.
    """
    model = ResNet18((16, 16, 3), 4, topography="grid", reduction="sum", width_multiplier=0.0625)
    rng = np.random.default_rng(0)
    model.set_weights(
        [
            rng.normal(0.0, np.sqrt(2.0 / np.prod(w.shape[:-1])), w.shape)
            if w.ndim > 1
            else (np.zeros_like(w) if "classifier" in v.path else w)  # its bias init is random
            for v, w in zip(model.weights, model.get_weights(), strict=True)
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **fast_path.compile_options(),
    )
    x = rng.normal(size=(8, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 4, size=(8,))
    return [float(model.train_on_batch(x, y, return_dict=True)["loss"]) for _ in range(2)]


@pytest.mark.tf_only  # Runs once, in the TensorFlow pass, and starts the other two backends.
@pytest.mark.slow
def test_losses_equal_across_backends_with_the_fast_path():
    tests = os.path.dirname(os.path.abspath(__file__))
    code = (
        f"import sys, json; sys.path.insert(0, {tests!r}); "
        "from test_fast_path import training_losses; print(json.dumps(training_losses()))"
    )
    losses = {"tensorflow": training_losses()}
    for backend in ("jax", "torch"):
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-2000:]
        losses[backend] = json.loads(done.stdout.strip().splitlines()[-1])
    reference = np.array(losses["tensorflow"])
    assert reference[0] > 1.0 and reference[1] != reference[0]  # topographic terms; an update
    for backend in ("jax", "torch"):
        np.testing.assert_allclose(losses[backend], reference, rtol=1e-5, err_msg=backend)
