"""Checkpoints a killed process cannot leave half-written: the backup and the best model.

Keras writes both in place: `ModelCheckpoint` saves over `best.keras`, and `BackupAndRestore`
over `latest.weights.h5` then its metadata (with `double_checkpoint=True`, after copying both),
so a kill at the wrong moment leaves a truncated file, or one epoch's weights with another's
epoch number. Here every checkpoint is written under a temporary name and renamed into place
(`os.replace`, atomic on one file system), and the backup keeps its previous epoch to fall back
on. (A crash of the machine itself can still lose data not yet flushed to disk.)
"""

import json
import os
import re
import shutil
import warnings
from pathlib import Path

import keras

WEIGHTS = "weights.weights.h5"
METADATA = "training_metadata.json"
_EPOCH_FOLDER = re.compile(r"^epoch-(\d+)$")


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` with whole-or-nothing backups and a fallback to the previous one.

    At each epoch's end the weights (optimizer state included) and the epoch number go into
    `backup_dir/epoch-<N>/`, written as `epoch-<N>.tmp/` and then renamed; the `keep` newest
    backups stay. At `fit`'s start the newest backup that loads is restored (a warning names
    each unreadable one); with no backup, training starts from the first epoch, and with only
    unreadable ones it raises `ValueError` rather than train from half-loaded weights.

    Args:
        backup_dir: folder for this run's backups only.
        keep: how many epochs' backups to keep (at least 2: the newest and its fallback).
    """

    def __init__(self, backup_dir, keep=2):
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=False)
        if int(keep) < 2:
            raise ValueError(f"`keep` must be at least 2 (a backup and its fallback); got {keep}.")
        self.keep = int(keep)

    def backups(self):
        """Complete backup folders, oldest first."""
        if not os.path.isdir(self.backup_dir):
            return []
        found = [
            (int(match.group(1)), os.path.join(self.backup_dir, name))
            for name in os.listdir(self.backup_dir)
            if (match := _EPOCH_FOLDER.match(name))
        ]
        return [path for _, path in sorted(found)]

    def on_train_begin(self, logs=None):
        backups = self.backups()
        for folder in reversed(backups):
            self._weights_path = os.path.join(folder, WEIGHTS)
            self._training_metadata_path = os.path.join(folder, METADATA)
            try:
                self._load_model()
                return
            except (OSError, ValueError, KeyError) as error:  # truncated h5, bad JSON, ...
                warnings.warn(
                    f"Backup {folder} is unreadable ({error}); trying the one before it.",
                    stacklevel=2,
                )
        if backups:
            raise ValueError(
                f"No readable backup in {self.backup_dir} (tried {', '.join(backups)}): delete "
                "that folder to train again from the first epoch."
            )

    def _save_model(self):
        final = os.path.join(self.backup_dir, f"epoch-{self._current_epoch}")
        partial = f"{final}.tmp"
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
        self.model.save_weights(os.path.join(partial, WEIGHTS))
        with open(os.path.join(partial, METADATA), "w") as f:
            json.dump({"epoch": self._current_epoch, "batch": self._last_batch_seen}, f)
        shutil.rmtree(final, ignore_errors=True)  # the same epoch again, after a resume
        os.replace(partial, final)
        for old in self.backups()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)


class BestModelCheckpoint(keras.callbacks.Callback):
    """Saves the model to a `.keras` file at each epoch where `monitor` beats its best so far.

    Keras' `ModelCheckpoint(save_best_only=True)` without the in-place write: the model is
    saved beside the file, then renamed over it. The file is also written when it is missing
    (a run killed before its first save), whatever `initial_value_threshold` says.

    Args:
        path: the `.keras` file.
        monitor: a logged metric where higher is better (default "val_accuracy").
        initial_value_threshold: the best value so far (e.g. from a resumed run's log).
    """

    def __init__(self, path, monitor="val_accuracy", initial_value_threshold=None):
        super().__init__()
        self.path = Path(path)
        if self.path.suffix != ".keras":
            raise ValueError(f"`path` must end in .keras; got {path}.")
        self.monitor = monitor
        self.best = float("-inf") if initial_value_threshold is None else initial_value_threshold

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(
                f"BestModelCheckpoint monitors {self.monitor!r}, which is not logged "
                f"(logged: {sorted(logs or {})}); pass validation data or another `monitor`."
            )
        if value > self.best or not self.path.exists():
            self.best = max(float(value), self.best)
            partial = self.path.with_name(f"{self.path.stem}.partial.keras")
            self.model.save(partial, overwrite=True)
            os.replace(partial, self.path)
