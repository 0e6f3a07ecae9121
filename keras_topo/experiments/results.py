"""`result.json`: what one finished run records, and reading it back.

Keys: `status` ("complete"), `config` (the `RunConfig`), `organisation` ("baseline",
"grid-2d", ...), `reduction` (how the per-layer losses were combined: "mean" or "sum"),
`backend`, `versions`, `jit_compile`, `fast_path` (the settings trained with:
`experiments.fast_path.settings`: jit_compile, precision, tf_onednn, omp_wait_policy), `params`, `epochs` (one dict of logged metrics per
epoch), `best_epoch` and `best_val_accuracy` (the checkpoint kept), `test` (metrics of that
checkpoint on the test split), `topographic_layers`, `topographic_loss` (per layer, unweighted,
on the probe batch at the best epoch), `map_scores` (per topographic layer, the scores of
`keras_topo.metrics.measure_topography` on the test split), `wall_time_s`.
"""

import json
import os
import platform
import sys
from pathlib import Path

import keras
import numpy as np

RESULT_FILE = "result.json"
_TOPO_PREFIX = "topo_loss/"


def make(
    config, epochs, test, topographic_layers, params, jit_compile, wall_time_s, fast_path=None
):
    """The result dict of a finished run (`fast_path`: `experiments.fast_path.settings(...)`)."""
    scored = [row for row in epochs if "val_accuracy" in row]
    best = max(scored, key=lambda row: row["val_accuracy"]) if scored else {}
    topography = config.get("topography")
    return {
        "status": "complete",
        "config": config,
        "organisation": organisation(config),
        "reduction": config.get("reduction") if topography else None,
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


def organisation(config):
    """ "baseline" or "<scheme>-<dimension>d", with "-<objective>" for objectives other than
    the paper's "activation", for a run's config dict."""
    from keras_topo import positions

    topography = config.get("topography")
    if topography is None:
        return "baseline"
    dimension = config.get("dimension") or positions.SCHEME_DIMENSIONS[topography][0]
    objective = config.get("objective", "activation")
    suffix = "" if objective == "activation" else f"-{objective}"
    return f"{topography}-{dimension}d{suffix}"


def versions():
    """Versions of Python, Keras, the backend library, numpy and keras-topo."""
    import keras_topo

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
    """The run's result dict, or None if it has none yet."""
    path = Path(run_dir) / RESULT_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def write(run_dir, result):
    """Writes `result.json` atomically (a crash never leaves half a file)."""
    path = Path(run_dir) / RESULT_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=_to_builtin))
    os.replace(tmp, path)


def _to_builtin(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
