"""`keras_topo.pruning.finetune`: the recipe's optimizer and schedule, recovered accuracy."""

import json

import keras
import numpy as np
import pytest

import keras_topo
from keras_topo import training_recipe
from keras_topo.experiments import digits
from keras_topo.layer_selection import is_topographic, walk_layers
from keras_topo.pruning import finetune, prune_channels


def _model():
    # BN momentum 0.9: its moving statistics settle within the few training steps used here.
    inputs = keras.Input(digits.INPUT_SHAPE)
    x = keras_topo.TopographicConv2D(16, 3, padding="same", topographic_weight=0.1)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(momentum=0.9)(x))
    x = keras.layers.MaxPooling2D()(x)
    x = keras_topo.TopographicConv2D(32, 3, padding="same", topographic_weight=0.1)(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(momentum=0.9)(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))


@pytest.fixture(scope="module")
def pruned():
    """A trained digits model pruned at 75 % (removed), its test data and accuracy."""
    keras.utils.set_random_seed(0)
    x, y = digits.arrays("train")
    model = _model()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=4, batch_size=64, verbose=0)
    small = prune_channels(model, 0.75, mode="remove")
    x_test, y_test = digits.arrays("test")
    return small, (x, y), (x_test, y_test)


@pytest.mark.slow
def test_finetune_recovers_accuracy_with_the_recipe(pruned):
    small, train, (x_test, y_test) = pruned
    small = keras.Model.from_config(small.get_config())  # A private copy of the same model.
    small.set_weights(pruned[0].get_weights())
    before = _accuracy(small, x_test, y_test)
    tuned = finetune(small, train, epochs=3, learning_rate=0.05, batch_size=64, verbose=0)
    after = _accuracy(tuned, x_test, y_test)
    assert after > before + 0.05, (before, after)
    # The recipe's optimizer, one cosine cycle over exactly epochs * batches, ending at 0.
    assert isinstance(tuned.optimizer, training_recipe.TorchSGD)
    steps = 3 * int(np.ceil(len(train[0]) / 64))
    assert int(tuned.optimizer.iterations) == steps
    schedule = tuned.optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(0.05)
    assert float(schedule(steps)) == pytest.approx(0.0, abs=1e-7)
    assert tuned.optimizer.coupled_weight_decay == training_recipe.WEIGHT_DECAY
    assert len(tuned.history.history["accuracy"]) == 3


def test_finetune_keeps_or_strips_the_topography(pruned):
    small, (x, y), _ = pruned
    subset = (x[:64], y[:64])
    stripped = finetune(small, subset, epochs=1, keep_topography=False, verbose=0)
    assert stripped is not small
    assert not any(is_topographic(layer) for layer in walk_layers(stripped))
    assert any(is_topographic(layer) for layer in walk_layers(small))  # input untouched
    stripped(x[:2])
    assert stripped.losses == []
    kept = finetune(small, subset, epochs=1, verbose=0)
    assert kept is small
    kept(x[:2])
    assert len(kept.losses) == 2  # one per topographic layer


def test_finetune_takes_a_dataset_and_rejects_bad_input(pruned):
    tf = pytest.importorskip("tensorflow")
    small, (x, y), _ = pruned
    dataset = tf.data.Dataset.from_tensor_slices((x[:96], y[:96])).batch(32)
    tuned = finetune(small, dataset, epochs=1, verbose=0)
    assert int(tuned.optimizer.iterations) == 3
    with pytest.raises(ValueError, match="steps_per_epoch"):
        finetune(small, dataset.repeat(), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        finetune(small, (x, y), epochs=0)


def test_prune_command_reports_accuracy_before_and_after_finetuning(tmp_path, capsys):
    from test_experiments_prune import make_run

    from keras_topo import cli

    config, _ = make_run(tmp_path / "topo", "grid")
    argv = ["prune", "--run", config.out, "--fractions", "0.5", "--mode", "remove"]
    assert cli.main([*argv, "--finetune-epochs", "1"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("fine-tuned") == 1
    stored = json.loads((tmp_path / "topo" / "pruning-l2-remove-finetune1.json").read_text())
    assert stored["finetune_epochs"] == 1
    for point in stored["points"]:
        assert 0 <= point["finetuned_accuracy"] <= 1 and "finetuned_loss" in point
        assert f"{100 * point['finetuned_accuracy']:6.2f}% fine-tuned" in printed
    with pytest.raises(SystemExit):
        cli.main(["prune", "--run", config.out, "--fractions", "0.5", "--finetune-epochs", "1"])
    assert "needs mode='remove'" in capsys.readouterr().err
