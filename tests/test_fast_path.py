"""The per-backend fast path: its choices, and the same losses on every backend with it."""

import json
import os
import re
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


# Keras and TensorFlow set variables of their own when imported (TF_FORCE_GPU_ALLOW_GROWTH,
# TF_CPP_MIN_LOG_LEVEL=1...): keras_topo's import is compared with theirs.
_IMPORT_ONLY = """
import json, os
import keras, tensorflow, torch
before = dict(os.environ)
import keras_topo
print(json.dumps({k: v for k, v in os.environ.items() if before.get(k) != v}))
"""


@pytest.mark.tf_only  # a torch process, started once (in the TensorFlow pass)
def test_import_leaves_the_environment_as_it_was():
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    for name in ("OMP_WAIT_POLICY", "TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ONLY], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}


# Runs `keras-topo [FLAGS] --help` in-process, noting each variable when TF and torch are first
# imported, then what TensorFlow chose and the warnings of two `warn_if_slow_kernels` calls.
_LAUNCH = """
import builtins, json, os, sys, warnings
seen, real_import = {}, builtins.__import__
def spy(name, *args, **kwargs):
    if name in ("tensorflow", "torch") and name not in seen:
        seen[name] = {k: os.environ.get(k) for k in
                      ("OMP_WAIT_POLICY", "TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")}
    return real_import(name, *args, **kwargs)
builtins.__import__ = spy
import keras_topo_launcher
try:
    keras_topo_launcher.main(sys.argv[1:] + ["--help"])
except SystemExit:
    pass
import torch  # loaded by Keras on the torch backend, else later in the process
builtins.__import__ = real_import
from keras_topo.experiments import fast_path
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    fast_path.warn_if_slow_kernels()
    fast_path.warn_if_slow_kernels()
print(json.dumps({"seen": seen, "onednn": fast_path.tf_onednn_enabled(),
                  "origin": fast_path.onednn_origin(),
                  "warnings": [str(w.message) for w in caught
                               if w.category is fast_path.SlowKernelsWarning]}))
"""


@pytest.mark.tf_only  # its own processes, started once (in the TensorFlow pass)
@pytest.mark.parametrize(
    "backend, user, flags, expected",
    [
        (
            "torch",
            {},
            [],
            {
                "OMP_WAIT_POLICY": "PASSIVE",
                "TF_ENABLE_ONEDNN_OPTS": "1",
                "TF_CPP_MIN_LOG_LEVEL": "3",
            },
        ),
        # The user's own values win; --backend-logs leaves TensorFlow's log level alone.
        (
            "tensorflow",
            {"OMP_WAIT_POLICY": "ACTIVE", "TF_ENABLE_ONEDNN_OPTS": "0"},
            ["--backend-logs"],
            {
                "OMP_WAIT_POLICY": "ACTIVE",
                "TF_ENABLE_ONEDNN_OPTS": "0",
                "TF_CPP_MIN_LOG_LEVEL": None,
            },
        ),
    ],
    ids=["defaults", "user-values"],
)
def test_the_command_sets_the_environment_before_tensorflow_and_torch_load(
    backend, user, flags, expected
):
    env = {**os.environ, "KERAS_BACKEND": backend, **user}
    for name in set(expected) - set(user):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCH, *flags], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if not flags:  # quiet by default: none of TensorFlow's C++ log lines ("I0000 ...")
        assert not re.search(r"^[IWEF]\d{4} ", done.stderr, re.MULTILINE), done.stderr
    assert report["seen"]["tensorflow"] == expected
    # (TensorFlow itself sets TF_CPP_MIN_LOG_LEVEL=1 if unset, before torch loads.)
    assert report["seen"]["torch"]["OMP_WAIT_POLICY"] == expected["OMP_WAIT_POLICY"]
    onednn_on = expected["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert report["onednn"] is onednn_on  # what TensorFlow chose at import
    assert report["origin"] == (
        "keras-topo's fast path, TF_ENABLE_ONEDNN_OPTS=1"
        if not user
        else "the environment, TF_ENABLE_ONEDNN_OPTS=0"
    )
    # oneDNN off on the TensorFlow backend: one warning for two checks, saying what to set.
    assert len(report["warnings"]) == (0 if onednn_on or backend != "tensorflow" else 1)
    assert all("TF_ENABLE_ONEDNN_OPTS=1" in message for message in report["warnings"])


@pytest.mark.tf_only
def test_onednn_state_of_this_process():
    """What TensorFlow reports equals what the environment asked for at import (run by
    `test_cpu_channels_first` in a process with TF_ENABLE_ONEDNN_OPTS=0)."""
    import tensorflow  # noqa: F401

    asked = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    state = fast_path.tf_onednn_enabled()
    assert isinstance(state, bool)
    if asked in ("0", "1"):
        assert state is (asked == "1")


def test_onednn_origin_names_who_chose(monkeypatch):
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    assert fast_path.onednn_origin().startswith("TensorFlow's default for this CPU")
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    monkeypatch.setattr(fast_path, "applied", {})
    assert fast_path.onednn_origin() == "the environment, TF_ENABLE_ONEDNN_OPTS=1"
    monkeypatch.setattr(fast_path, "applied", {"TF_ENABLE_ONEDNN_OPTS": "1"})
    assert fast_path.onednn_origin() == "keras-topo's fast path, TF_ENABLE_ONEDNN_OPTS=1"


def test_settings_record_the_process(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert fast_path.settings(False, "mixed_float16") == {
        "jit_compile": False,
        "precision": "mixed_float16",
        "tf_onednn": fast_path.tf_onednn_enabled(),
        "omp_wait_policy": "PASSIVE",
    }


def test_precision_policy_is_checked_then_set_for_the_block_only():
    for precision in fast_path.PRECISIONS:
        fast_path.check_precision(precision)
    with pytest.raises(ValueError, match="'float16' cannot run on the torch backend"):
        fast_path.check_precision("float16", "torch")
    with fast_path.precision_policy("mixed_float16"):
        assert keras.config.dtype_policy().name == "mixed_float16"
        assert keras.layers.Dense(2).compute_dtype == "float16"
    assert keras.config.dtype_policy().name == "float32"


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
