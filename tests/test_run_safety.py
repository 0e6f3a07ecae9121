"""The runner under bad arguments and faults: checks before writing, the folder lock, atomic
checkpoints with a fallback, the NaN guard, and a best model loadable with plain Keras."""

import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import tiny_architecture
from test_experiments_run import TINY, BatchCounter, KillInEpoch

from keras_topo import cli, training_recipe
from keras_topo.experiments import checkpoints, divergence, results, run, run_lock

CLI_TINY = ["--dataset", "digits", "--model", "tiny", "--epochs", "1", "--batch-size", "32"]
CLI_TINY += ["--verbose", "0"]


@pytest.fixture(autouse=True, scope="module")
def _tiny_architecture():
    with tiny_architecture.registered():
        yield


def _refused(argv, capsys):
    """Runs the CLI expecting a one-line argument error; returns that line."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--lambda", "nan", "lambda"),
        ("--lambda", "inf", "lambda"),
        ("--lambda", "-1", "lambda"),
        ("--learning-rate", "nan", "--learning-rate must be a finite number > 0"),
        ("--learning-rate", "0", "--learning-rate must be a finite number > 0"),
        ("--momentum", "1", "--momentum must be a finite number in \\[0, 1\\)"),
        ("--weight-decay", "-0.1", "--weight-decay must be a finite number >= 0"),
        ("--warmup-fraction", "1", "--warmup-fraction must be a finite number in \\[0, 1\\)"),
        ("--width-multiplier", "0", "--width-multiplier must be a finite number > 0"),
        ("--train-subset", "0", "--train-subset must be a positive integer"),
        ("--epochs", "0", "epochs must be a positive integer"),
        ("--batch-size", "0", "batch_size must be a positive integer"),
        ("--seed", "-1", "--seed must be a non-negative integer"),
    ],
)
def test_bad_numbers_are_refused_before_anything_is_written(tmp_path, capsys, flag, value, message):
    out = tmp_path / "run"
    line = _refused(
        ["train", *CLI_TINY, "--topography", "grid", flag, value, "--out", str(out)], capsys
    )
    assert line.startswith("keras-topo train: error:")
    assert __import__("re").search(message, line), line
    assert not out.exists()


def test_unusable_folders_are_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    assert f"--out {a_file} is a file" in _refused(
        ["train", *CLI_TINY, "--out", str(a_file)], capsys
    )
    under = a_file / "run"
    assert "is a file, not a folder" in _refused(["train", *CLI_TINY, "--out", str(under)], capsys)
    missing = tmp_path / "no-data"
    line = _refused(
        ["train", "--dataset", "cifar10", "--data-dir", str(missing), "--out", str(tmp_path / "c")],
        capsys,
    )
    assert f"--data-dir {missing}: no such folder" in line and not (tmp_path / "c").exists()
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        run_lock.os, "access", lambda p, mode: p != str(read_only) and real_access(p, mode)
    )
    line = _refused(["train", *CLI_TINY, "--out", str(read_only / "run")], capsys)
    assert f"{read_only} is not writable" in line and not (read_only / "run").exists()
    line = _refused(["report", str(tmp_path / "nothing-here")], capsys)
    assert "no such folder" in line


def test_a_second_process_on_the_folder_is_refused_naming_the_holder(tmp_path, capsys):
    config = run.RunConfig(**TINY, out=str(tmp_path / "run"))
    os.makedirs(config.out)
    with run_lock.lock_run_folder(config.out):  # another open file: as another process would
        with pytest.raises(run_lock.RunFolderBusy, match=f"in use by process {os.getpid()} on"):
            run.train(config)
        line = _refused(["train", *CLI_TINY, "--out", config.out], capsys)
        assert "in use by process" in line
    assert os.listdir(config.out) == [run_lock.LOCK_FILE]  # nothing else was written
    with run_lock.lock_run_folder(config.out):  # free again once released
        pass


def test_the_lock_dies_with_its_holder(tmp_path):
    """A SIGKILLed holder leaves no stale lock (the kernel releases `flock`)."""
    code = (
        "import importlib.util, sys, time\n"
        f"spec = importlib.util.spec_from_file_location('run_lock', {run_lock.__file__!r})\n"
        "lock = importlib.util.module_from_spec(spec); spec.loader.exec_module(lock)\n"
        f"with lock.lock_run_folder({str(tmp_path)!r}):\n"
        "    print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(run_lock.RunFolderBusy, match=f"process {holder.pid} .*-c"):
            with run_lock.lock_run_folder(str(tmp_path)):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_lock.lock_run_folder(str(tmp_path)):
        pass


def _tiny_model(optimizer="sgd"):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer, "mse")
    return model


def test_a_truncated_backup_falls_back_to_the_previous_epoch(tmp_path):
    x, y = np.ones((4, 3)), np.ones((4, 2))
    backup = checkpoints.AtomicBackupAndRestore(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        _tiny_model().fit(
            x, y, batch_size=2, epochs=3, callbacks=[backup, KillInEpoch(2, 1)], verbose=0
        )
    newest, older = backup.backups()[::-1]
    assert os.path.basename(newest) == "epoch-2" and os.path.basename(older) == "epoch-1"
    weights = os.path.join(newest, checkpoints.WEIGHTS)
    with open(weights, "r+b") as f:  # a kill in the middle of writing it
        f.truncate(os.path.getsize(weights) // 2)
    os.makedirs(tmp_path / "backup" / "epoch-3.tmp")  # a half-written next one: ignored
    counter = BatchCounter()
    with pytest.warns(UserWarning, match="epoch-2 is unreadable"):
        history = _tiny_model().fit(
            x, y, batch_size=2, epochs=3, callbacks=[backup, counter], verbose=0
        )
    assert counter.batches == 2 * 2  # epochs 1 and 2 again (2 batches each), not epoch 0
    assert len(history.history["loss"]) == 2


def test_backups_keep_the_newest_two_complete_epochs(tmp_path):
    backup = checkpoints.AtomicBackupAndRestore(tmp_path / "backup")
    _tiny_model().fit(np.ones((4, 3)), np.ones((4, 2)), epochs=4, callbacks=[backup], verbose=0)
    assert sorted(os.listdir(tmp_path / "backup")) == ["epoch-3", "epoch-4"]
    history = _tiny_model().fit(
        np.ones((4, 3)), np.ones((4, 2)), epochs=5, callbacks=[backup], verbose=0
    )
    assert len(history.history["loss"]) == 1  # resumed after epoch 4
    with pytest.raises(ValueError, match="at least 2"):
        checkpoints.AtomicBackupAndRestore(tmp_path / "b", keep=1)


def test_a_diverging_run_stops_and_is_never_recorded(tmp_path):
    config = run.RunConfig(**{**TINY, "epochs": 3}, learning_rate=1e30, out=str(tmp_path / "run"))
    with pytest.raises(divergence.TrainingDiverged, match="loss is (nan|inf) at"):
        run.train(config)
    assert results.read(config.out) is None
    for row in run.RunFolder(config.out).read_log():
        assert all(np.isfinite(value) for value in row.values())


def test_check_finite_names_the_metric():
    divergence.check_finite({"accuracy": 0.5, "loss": 1.0}, "on the test split")
    with pytest.raises(divergence.TrainingDiverged, match="loss is nan on the test split"):
        divergence.check_finite({"accuracy": 0.5, "loss": float("nan")}, "on the test split")


def test_best_model_loads_with_plain_keras(tmp_path):
    """`import keras_topo` is all `keras.saving.load_model` needs (the runner's optimizer too)."""
    model = _tiny_model(training_recipe.make_optimizer(steps_per_epoch=2, epochs=1))
    x = np.ones((4, 3))
    best = checkpoints.BestModelCheckpoint(tmp_path / "best.keras", monitor="val_loss")
    model.fit(x, x[:, :2], validation_data=(x, x[:, :2]), epochs=1, callbacks=[best], verbose=0)
    code = (
        "import keras, keras_topo, sys\n"
        "print(type(keras.saving.load_model(sys.argv[1]).optimizer).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "best.keras")],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "TorchSGD"


def test_best_checkpoint_is_written_whole(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse", metrics=["mae"])
    path = tmp_path / "best.keras"
    best = checkpoints.BestModelCheckpoint(path, monitor="val_mae", initial_value_threshold=1e9)
    x, y = np.ones((4, 3)), np.ones((4, 2))
    model.fit(x, y, validation_data=(x, y), epochs=1, callbacks=[best], verbose=0)
    assert path.exists() and not list(tmp_path.glob("*.partial.keras"))  # missing: written
    keras.saving.load_model(path)
    with pytest.raises(ValueError, match="end in .keras"):
        checkpoints.BestModelCheckpoint(tmp_path / "best.h5")


def test_only_unreadable_backups_raise_rather_than_start_over(tmp_path):
    folder = tmp_path / "backup" / "epoch-1"
    folder.mkdir(parents=True)
    (folder / checkpoints.WEIGHTS).write_bytes(b"\x89HDF\r\n")  # cut right after the header
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    backup = checkpoints.AtomicBackupAndRestore(tmp_path / "backup")
    with pytest.warns(UserWarning, match="unreadable"):
        with pytest.raises(ValueError, match="No readable backup .* delete that folder"):
            model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1, callbacks=[backup], verbose=0)
