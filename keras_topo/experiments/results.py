"""`result.json`: what one finished run records, and reading it back.

Keys: `status` ("complete"), `config` (`RunConfig.to_dict()`), `organisation`
(`RunConfig.organisation`: "baseline", "grid-2d", ...), `reduction` (how the per-layer losses
were combined: "mean" or "sum"), `backend`, `versions`, `jit_compile`, `fast_path` (the
settings trained with: `experiments.fast_path.settings`: jit_compile, precision, tf_onednn,
omp_wait_policy), `params`, `epochs` (one dict of logged metrics per epoch), `best_epoch` and
`best_val_accuracy` (the checkpoint kept), `test` (metrics of that checkpoint on the test
split), `topographic_layers`, `topographic_loss` (per layer, unweighted, on the probe batch at
the best epoch), `map_scores` (per topographic layer, the scores of
`keras_topo.metrics.measure_topography` on the test split), `wall_time_s`. The file lives in
the run's folder (`RunFolder.result_path`).
"""

import platform
import sys
import warnings

import keras
import numpy as np

import keras_topo
from keras_topo.experiments.run_config import RunConfig
from keras_topo.experiments.run_folder import RunFolder

RESULT_FILE = RunFolder.RESULT
_TOPO_PREFIX = "topo_loss/"


def make(
    config, epochs, test, topographic_layers, params, jit_compile, wall_time_s, fast_path=None
):
    """The result dict of a finished run (`config`: its `RunConfig`; `fast_path`:
    `experiments.fast_path.settings(...)`)."""
    if not isinstance(config, RunConfig):  # a config dict, as keras-topo 0.3.0 passed
        config = RunConfig.from_dict(config)
    scored = [row for row in epochs if "val_accuracy" in row]
    best = max(scored, key=lambda row: row["val_accuracy"]) if scored else {}
    return {
        "status": "complete",
        "config": config.to_dict(),
        "organisation": config.organisation,
        "reduction": None if config.topography is None else config.topography.reduction,
        "backend": keras.backend.backend(),
        "versions": versions(),
        "jit_compile": jit_compile,
        "fast_path": fast_path,
        "params": int(params),
        "epochs": epochs,
        "best_epoch": int(best["epoch"]) if best else None,
        "best_val_accuracy": best.get("val_accuracy"),
        "test": test,
        "topographic_layers": topographic_layers,
        "topographic_loss": {
            key[len(_TOPO_PREFIX) :]: value
            for key, value in best.items()
            if key.startswith(_TOPO_PREFIX)
        },
        "wall_time_s": round(wall_time_s, 1),
    }


def run_config(result):
    """The `RunConfig` a result was trained with (either `config` format, `RunConfig.from_dict`)."""
    return RunConfig.from_dict(result["config"])


def organisation(config):
    """Deprecated: `RunConfig.from_dict(config).organisation`, for a run's config dict."""
    warnings.warn(
        "results.organisation(config) is deprecated: use RunConfig.organisation.",
        DeprecationWarning,
        stacklevel=2,
    )
    return RunConfig.from_dict(config).organisation


def versions():
    """Versions of Python, Keras, the backend library, numpy and keras-topo."""
    found = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "numpy": np.__version__,
        "keras_topo": keras_topo.__version__,
    }
    for module in ("tensorflow", "jax", "torch"):
        if module in sys.modules:
            found[module] = getattr(sys.modules[module], "__version__", "unknown")
    return found


def read(run_dir):
    """The run's result dict, or None if it has none yet (`RunFolder.read_result`)."""
    return RunFolder(run_dir).read_result()


def write(run_dir, result):
    """Writes `result.json` atomically (`RunFolder.write_result`)."""
    RunFolder(run_dir).write_result(result)
