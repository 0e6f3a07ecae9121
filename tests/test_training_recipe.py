"""The training recipe: torch-exact coupled SGD, decoupled SGD, warm-up + cosine schedule."""

import math

import keras
import numpy as np
import pytest

from keras_topo import training_recipe


def _run_keras(optimizer, w0, grads):
    variable = keras.Variable(w0)
    for g in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g)], [variable])
    return keras.ops.convert_to_numpy(variable)


def test_torch_sgd_matches_torch_step_for_step_under_a_schedule():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(5, 3)).astype("float32")
    grads = [rng.normal(size=(5, 3)).astype("float32") for _ in range(6)]
    rates = [0.05, 0.1, 0.2, 0.15, 0.05, 0.01]  # changes every step, like the recipe's

    class Steps(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return keras.ops.take(keras.ops.convert_to_tensor(rates, "float32"), step)

    ours = _run_keras(training_recipe.TorchSGD(Steps(), momentum=0.9, weight_decay=0.01), w0, grads)

    param = torch.nn.Parameter(torch.tensor(w0))
    reference = torch.optim.SGD([param], lr=rates[0], momentum=0.9, weight_decay=0.01)
    for rate, g in zip(rates, grads, strict=True):
        for group in reference.param_groups:
            group["lr"] = rate
        param.grad = torch.tensor(g)
        reference.step()
    np.testing.assert_allclose(ours, param.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_torch_sgd_differs_from_keras_decoupled_sgd():
    w0 = np.ones((4,), "float32")
    grads = [np.full((4,), 0.5, "float32")] * 3
    coupled = _run_keras(training_recipe.TorchSGD(0.1, momentum=0.9, weight_decay=0.1), w0, grads)
    # Coupled by hand: b = 0.9 b + g + wd w; w -= lr b.
    w, b = w0.astype("float64"), 0.0
    for g in grads:
        b = 0.9 * b + g + 0.1 * w
        w = w - 0.1 * b
    np.testing.assert_allclose(coupled, w, rtol=1e-6)
    decoupled = _run_keras(keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.1), w0, grads)
    assert not np.allclose(coupled, decoupled, rtol=1e-3)


def test_make_optimizer_modes_and_config_round_trip():
    coupled = training_recipe.make_optimizer(10, 4, weight_decay_mode="coupled")
    assert isinstance(coupled, training_recipe.TorchSGD)
    assert (
        coupled.coupled_weight_decay == training_recipe.WEIGHT_DECAY
        and coupled.weight_decay is None
    )
    restored = training_recipe.TorchSGD.from_config(coupled.get_config())
    assert restored.momentum == 0.9 and restored.coupled_weight_decay == 0.01
    decoupled = training_recipe.make_optimizer(10, 4, weight_decay_mode="decoupled")
    assert isinstance(decoupled, keras.optimizers.SGD) and decoupled.weight_decay == 0.01
    assert not isinstance(decoupled, training_recipe.TorchSGD)
    with pytest.raises(ValueError, match="weight_decay_mode"):
        training_recipe.make_optimizer(10, 4, weight_decay_mode="l2")


def test_schedule_warms_up_linearly_over_30_percent_then_cosine_to_zero():
    schedule = training_recipe.learning_rate_schedule(
        steps_per_epoch=10, epochs=10, learning_rate=0.01
    )
    lr = {s: float(keras.ops.convert_to_numpy(schedule(s))) for s in (0, 15, 30, 65, 100)}
    assert lr[0] == pytest.approx(0.0, abs=1e-9)
    assert lr[15] == pytest.approx(0.005, rel=1e-5)  # halfway through the 30-step warm-up
    assert lr[30] == pytest.approx(0.01, rel=1e-5)
    assert lr[65] == pytest.approx(0.01 * (1 + math.cos(math.pi * 0.5)) / 2, rel=1e-4)
    assert lr[100] == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="warmup_fraction"):
        training_recipe.learning_rate_schedule(10, 10, warmup_fraction=1.0)


def test_recipe_defaults_are_the_papers():
    assert (
        training_recipe.LEARNING_RATE,
        training_recipe.MOMENTUM,
        training_recipe.WEIGHT_DECAY,
    ) == (0.01, 0.9, 0.01)
    assert training_recipe.BATCH_SIZE == 256 and training_recipe.WARMUP_FRACTION == 0.3
    assert (
        training_recipe.EPOCHS["cifar10"] == 100 and training_recipe.EPOCHS["speechcommands"] == 12
    )
    assert training_recipe.EPOCHS["birddcase"] == 36
