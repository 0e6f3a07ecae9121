"""Stop a run whose numbers went NaN or infinite before anything records them.

Keras' `TerminateOnNaN` either lets the epoch finish (so that its NaN row, checkpoint and backup
are written) or raises a bare `RuntimeError`, and it ignores the validation metrics.
`FailOnNonFinite`, placed before the bookkeeping callbacks, raises `TrainingDiverged` (a
`ValueError`: the CLI prints one line) at the first non-finite training loss or epoch metric,
so the run folder keeps its last finished epoch and is never recorded as complete.
"""

import math

import keras


class TrainingDiverged(ValueError):
    """A training or evaluation metric is NaN or infinite."""


def check_finite(metrics, where):
    """Raises `TrainingDiverged` naming the first non-finite value of the dict `metrics`."""
    for key, value in metrics.items():
        if not math.isfinite(float(value)):
            raise TrainingDiverged(
                f"{key} is {float(value)} {where}: the run diverged and is not recorded. Lower "
                "--lambda or --learning-rate and train again in a new --out (or delete this one)."
            )


class FailOnNonFinite(keras.callbacks.Callback):
    """Raises `TrainingDiverged` when the batch loss or an epoch's metric is NaN/inf."""

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if logs and "loss" in logs:
            check_finite({"loss": logs["loss"]}, f"at epoch {self.epoch}, batch {batch}")

    def on_epoch_end(self, epoch, logs=None):
        check_finite(logs or {}, f"at the end of epoch {epoch}")
