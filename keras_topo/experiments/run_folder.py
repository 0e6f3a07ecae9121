"""`RunFolder`: the layout of one run's folder; the only code that knows its file names.

    config.json   the `RunConfig` (`RunConfig.to_dict`), written before training starts
    result.json   what the finished run recorded (`keras_topo.experiments.results`)
    best.keras    the model at the epoch of best validation accuracy
    log.csv       one row per finished epoch (Keras' `CSVLogger`)
    tensorboard/  TensorBoard's logs
    backup/       the resumable backups while the run trains (`checkpoints`)
    pruning-<criterion>-<mode>[-compensated][-finetune<N>].json / .csv   prune sweeps
    similarity.json   raw cosine against Pearson similarity (`study.record_similarity`)
    export/       inference files (`export_run`)
    .lock         held by the process training in the folder (`run_lock`)

JSON files are written whole, then renamed into place: a crash never leaves half a file.
"""

import csv
import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np

from keras_topo.experiments.run_config import RunConfig


class RunFolder:
    """One run's folder (it need not exist yet).

    Args:
        path: the folder (a `str` or `Path`).
    """

    CONFIG = "config.json"
    RESULT = "result.json"
    BEST_MODEL = "best.keras"
    LOG = "log.csv"
    TENSORBOARD = "tensorboard"
    BACKUP = "backup"
    EXPORT = "export"
    PRUNING = "pruning-"
    SIMILARITY = "similarity.json"

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self):
        return f"RunFolder({str(self.path)!r})"

    @property
    def name(self):
        return self.path.name

    @property
    def config_path(self):
        return self.path / self.CONFIG

    @property
    def result_path(self):
        return self.path / self.RESULT

    @property
    def best_model_path(self):
        return self.path / self.BEST_MODEL

    @property
    def log_path(self):
        return self.path / self.LOG

    @property
    def tensorboard_dir(self):
        return self.path / self.TENSORBOARD

    @property
    def backup_dir(self):
        return self.path / self.BACKUP

    @property
    def similarity_path(self):
        return self.path / self.SIMILARITY

    @property
    def export_dir(self):
        return self.path / self.EXPORT

    def pruning_stem(self, criterion, mode, finetune_epochs=0, compensate=False):
        """`<run>/pruning-<criterion>-<mode>[-compensated][-finetune<N>]`: where a prune
        sweep's `.json` and `.csv` go."""
        suffix = "-compensated" if compensate else ""
        suffix += f"-finetune{finetune_epochs}" if finetune_epochs else ""
        return self.path / f"{self.PRUNING}{criterion}-{mode}{suffix}"

    def pruning_sweeps(self):
        """The stored prune sweeps' `.json` files, sorted by name."""
        return sorted(self.path.glob(f"{self.PRUNING}*.json"))

    def read_config(self):
        """The run's `RunConfig`: `result.json`'s once finished, else `config.json`'s (either
        format, `RunConfig.from_dict`). Raises `ValueError` if the folder holds neither."""
        result = self.read_result()
        if result is not None:
            return RunConfig.from_dict(result["config"])
        if self.config_path.exists():
            return RunConfig.from_dict(json.loads(self.config_path.read_text()))
        raise ValueError(f"{self.path} is not a run folder (no {self.RESULT} or {self.CONFIG}).")

    def write_config(self, config):
        """Writes `config.json`; raises `ValueError` if the folder holds a run that trains
        differently (`RunConfig.differences`), so a resumed run never mixes two settings."""
        if self.config_path.exists():
            previous = RunConfig.from_dict(json.loads(self.config_path.read_text()))
            changed = previous.differences(config)
            if changed:
                raise ValueError(
                    f"{self.path} holds a run with a different configuration "
                    f"({', '.join(changed)} differ); give another --out, or delete the folder "
                    "to start over."
                )
        _write_json(self.config_path, config.to_dict())

    def read_result(self):
        """The run's result dict, or None if it has none yet."""
        if not self.result_path.exists():
            return None
        return json.loads(self.result_path.read_text())

    def write_result(self, result):
        _write_json(self.result_path, result)

    def is_complete(self):
        """Whether the run finished (`result.json` with status "complete")."""
        result = self.read_result()
        return result is not None and result.get("status") == "complete"

    def read_log(self):
        """`log.csv`'s rows as dicts of floats, one per epoch (a re-run epoch keeps its last
        row); `[]` before the first epoch ends."""
        if not self.log_path.exists():
            return []
        with open(self.log_path, newline="") as f:
            rows = {int(row["epoch"]): row for row in csv.DictReader(f)}
        return [
            {
                key: int(value) if key == "epoch" else float(value)
                for key, value in rows[epoch].items()
                if value not in ("", None)
            }
            for epoch in sorted(rows)
        ]

    def best_logged(self, monitor="val_accuracy"):
        """The best (highest) `monitor` logged so far, or None: a resumed run keeps a better
        checkpoint."""
        values = [row[monitor] for row in self.read_log() if monitor in row]
        return max(values) if values else None

    def load_best_model(self):
        """The run's best checkpoint, uncompiled; `ValueError` if there is none yet."""
        if not self.best_model_path.exists():
            raise ValueError(f"{self.path} has no {self.BEST_MODEL}: train the run first.")
        return keras.saving.load_model(self.best_model_path, compile=False)

    def checkpoint_identity(self):
        """Size and modification time of `best.keras`: a retrained run has another."""
        stat = self.best_model_path.stat()
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def remove_backup(self):
        """Deletes `backup/` (once the result is written)."""
        shutil.rmtree(self.backup_dir, ignore_errors=True)


def _write_json(path, data):
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_to_builtin))
    os.replace(tmp, path)


def _to_builtin(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
