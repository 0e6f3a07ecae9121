"""The runner on tiny digits runs: files, result.json, best checkpoint, resume after a kill."""

import csv
import json
import os

import keras
import numpy as np
import pytest
import tiny_architecture

from keras_topo import Topography
from keras_topo.experiments import digits, fast_path, results, run

TINY = dict(
    dataset="digits",
    model=tiny_architecture.NAME,
    epochs=2,
    batch_size=32,
    train_subset=64,
    verbose=0,
)


class BatchCounter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


class KillInEpoch(keras.callbacks.Callback):
    """Simulates a kill: raises after `after` batches of epoch index `epoch`."""

    def __init__(self, epoch, after):
        super().__init__()
        self.epoch, self.after, self.current = epoch, after, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch + 1 >= self.after:
            raise KeyboardInterrupt("killed")


@pytest.fixture(autouse=True, scope="module")
def _tiny_architecture():
    with tiny_architecture.registered():
        yield


def _log_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "grid"
    config = run.RunConfig(**TINY, topography=Topography("grid", weight=0.5), out=str(out))
    return config, run.train(config)


def test_run_writes_its_files_and_a_complete_result(finished):
    config, result = finished
    out = config.out
    folder = run.RunFolder(out)
    for path in (folder.config_path, folder.result_path, folder.best_model_path):
        assert path.is_file(), path
    assert folder.log_path.is_file() and folder.tensorboard_dir.is_dir()
    assert not folder.backup_dir.exists()
    assert result == json.loads((run.Path(out) / "result.json").read_text())
    assert folder.read_config() == config and folder.is_complete()
    assert result["status"] == "complete" and result["organisation"] == "grid-2d"
    assert result["reduction"] == "mean" and result["backend"] == keras.backend.backend()
    assert result["config"]["topography"] == Topography("grid", weight=0.5).get_config()
    assert run.RunConfig.from_dict(result["config"]) == config
    assert result["jit_compile"] == run.resolve_jit_compile("default")  # the fast path
    assert result["fast_path"] == {
        "jit_compile": result["jit_compile"],
        "precision": "float32",
        "tf_onednn": fast_path.tf_onednn_enabled(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    assert [row["epoch"] for row in result["epochs"]] == [0, 1]
    assert {"python", "keras", "numpy", "keras_topo"} <= set(result["versions"])
    rows = _log_rows(run.Path(out) / "log.csv")
    val = [float(row["val_accuracy"]) for row in rows]
    assert result["best_val_accuracy"] == pytest.approx(max(val))
    assert result["best_epoch"] == int(np.argmax(val))
    layers = result["topographic_layers"]
    assert layers == ["conv2"] and set(result["topographic_loss"]) == set(layers)
    best_row = rows[result["best_epoch"]]
    for name in layers:
        assert result["topographic_loss"][name] == pytest.approx(
            float(best_row[f"topo_loss/{name}"])
        )


def test_test_metrics_are_those_of_the_best_checkpoint(finished):
    config, result = finished
    model = keras.saving.load_model(run.Path(config.out) / "best.keras")
    images, labels = digits.arrays("test")
    predictions = np.argmax(keras.ops.convert_to_numpy(model.predict(images, verbose=0)), -1)
    assert result["test"]["accuracy"] == pytest.approx(np.mean(predictions == labels), abs=1e-6)


def test_a_finished_run_is_returned_not_retrained(finished):
    config, result = finished
    counter = BatchCounter()
    assert run.train(config, callbacks=[counter]) == result
    assert counter.batches == 0


def test_killed_mid_epoch_resumes_from_its_last_finished_epoch(tmp_path):
    config = run.RunConfig(**{**TINY, "epochs": 3}, out=str(tmp_path / "base"))
    steps = 2  # 64 examples, batch 32
    with pytest.raises(KeyboardInterrupt):
        run.train(config, callbacks=[KillInEpoch(epoch=1, after=1)])
    assert results.read(config.out) is None
    first = _log_rows(tmp_path / "base" / "log.csv")
    assert [row["epoch"] for row in first] == ["0"]  # epoch 1 was killed mid-way
    counter = BatchCounter()
    result = run.train(config, callbacks=[counter])  # the same command again
    assert counter.batches == 2 * steps  # epochs 1 and 2 only; epoch 0 is not redone
    rows = _log_rows(tmp_path / "base" / "log.csv")
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert rows[0] == first[0]
    assert [row["epoch"] for row in result["epochs"]] == [0, 1, 2]
    assert result["status"] == "complete"


def test_a_crash_after_training_resumes_with_no_epoch_left(tmp_path):
    config = run.RunConfig(**TINY, out=str(tmp_path / "late"))

    class CrashAtEnd(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            raise KeyboardInterrupt("killed before the test evaluation")

    with pytest.raises(KeyboardInterrupt):
        run.train(config, callbacks=[CrashAtEnd()])
    counter = BatchCounter()
    result = run.train(config, callbacks=[counter])
    assert counter.batches == 0 and len(result["epochs"]) == 2


def test_a_folder_holding_another_run_is_refused(finished):
    config, _ = finished
    other = run.RunConfig(**{**TINY, "seed": 7}, out=str(run.Path(config.out).parent / "x"))
    run.Path(other.out).mkdir()
    (run.Path(other.out) / "config.json").write_text(json.dumps({**other.to_dict(), "seed": 1}))
    with pytest.raises(ValueError, match="seed"):
        run.train(other)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="dataset"):
        run.RunConfig(dataset="mnist")
    with pytest.raises(ValueError, match="model"):
        run.RunConfig(model="resnet50")
    with pytest.raises(ValueError, match="weight_decay_mode"):
        run.RunConfig(weight_decay_mode="adamw")
    with pytest.raises(ValueError, match="jit_compile"):
        run.RunConfig(jit_compile="maybe")
    backend = keras.backend.backend()
    with pytest.raises(ValueError, match=f"--precision 'float16' cannot run on the {backend}"):
        run.RunConfig(precision="float16")
    assert run.RunConfig(dataset="speechcommands").epochs == 12


def test_a_mixed_precision_baseline_records_its_policy_and_restores_the_global_one(tmp_path):
    config = run.RunConfig(
        **{**TINY, "epochs": 1}, precision="mixed_bfloat16", out=str(tmp_path / "baseline")
    )
    result = run.train(config)
    assert result["fast_path"]["precision"] == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"  # the process's policy is back
    model = keras.saving.load_model(tmp_path / "baseline" / "best.keras", compile=False)
    assert model.get_layer("conv2").compute_dtype == "bfloat16"
    assert model.get_layer("conv2").variable_dtype == "float32"
    # A baseline logs no topographic loss (no column of zeros).
    assert not any(
        key.startswith("topo_loss") for key in _log_rows(tmp_path / "baseline" / "log.csv")[0]
    )


def test_jit_compile_default_is_the_fast_path():
    assert run.resolve_jit_compile("default") == fast_path.compile_options()["jit_compile"]
    assert run.resolve_jit_compile("true") is True and run.resolve_jit_compile("auto") == "auto"


def test_digits_splits_are_fixed_disjoint_and_stratified():
    seen = {}
    for split in digits.SPLITS:
        images, labels = digits.arrays(split)
        assert images.shape[1:] == digits.INPUT_SHAPE and images.dtype == np.float32
        assert 0.0 <= images.min() and images.max() <= 1.0
        assert np.bincount(labels, minlength=10).min() >= 0.09 * len(labels)
        seen[split] = {row.tobytes() for row in images}
    assert sum(len(digits.arrays(s)[1]) for s in digits.SPLITS) == 1797
    # Disjoint as images (a few digits are exact duplicates in the source, so allow those).
    assert len(seen["train"] & seen["test"]) <= 3 and len(seen["validation"] & seen["test"]) <= 3
    again, _ = digits.arrays("test")
    np.testing.assert_array_equal(again, digits.arrays("test")[0])
