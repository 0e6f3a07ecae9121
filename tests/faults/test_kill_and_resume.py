"""A real `keras-topo train` process, SIGKILLed mid-run and started again: no finished epoch is
lost or trained twice, and the run completes."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest

EPOCHS = 6
KILL_AFTER = 2  # finished (backed-up) epochs before the kill
TIMEOUT_S = 600


def _command(out):
    return [
        sys.executable,
        "-m",
        "keras_topo.cli",
        "train",
        "--dataset",
        "digits",  # scikit-learn's built-in digits: no download
        "--train-subset",
        "64",
        "--batch-size",
        "32",
        "--width-multiplier",
        "0.125",
        "--epochs",
        str(EPOCHS),
        "--topography",
        "grid",
        "--verbose",
        "0",
        "--out",
        str(out),
    ]


def _backed_up_epochs(out):
    backup = out / "backup"
    names = os.listdir(backup) if backup.is_dir() else []
    return sorted(int(n.split("-")[1]) for n in names if n.startswith("epoch-") and "." not in n)


def _logged_epochs(out):
    with open(out / "log.csv", newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.tf_only  # a process per backend would add minutes of XLA compiles (JAX)
def test_sigkill_mid_run_loses_no_finished_epoch(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    first = subprocess.Popen(_command(out), env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + TIMEOUT_S
    try:
        while len(_backed_up_epochs(out)) < 1 or max(_backed_up_epochs(out)) < KILL_AFTER:
            assert first.poll() is None, f"finished before the kill: {first.stderr.read()[-2000:]}"
            assert time.time() < deadline, "no backup in time"
            time.sleep(0.02)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    done_at_kill = max(_backed_up_epochs(out))
    assert done_at_kill < EPOCHS and not (out / "result.json").exists()
    logged_at_kill = _logged_epochs(out)
    assert logged_at_kill[:done_at_kill] == list(range(done_at_kill))

    second = subprocess.run(_command(out), env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    logged = _logged_epochs(out)
    # Backed-up epochs are kept, never trained again; at most the epoch that was being saved
    # when the process died is logged twice (its row was written, its backup was not).
    assert logged[:done_at_kill] == list(range(done_at_kill))
    assert logged[done_at_kill:] in (
        list(range(done_at_kill, EPOCHS)),
        [done_at_kill, *range(done_at_kill, EPOCHS)],
    )
    assert "complete" in (out / "result.json").read_text()
    assert not (out / "backup").exists()
