"""The paper's experiments, run end to end (what the `keras-topo` command calls).

- `recipe`: deprecated alias of `keras_topo.training_recipe` (the runner's optimizer and schedule).
- `datasets`, `digits`: the paper's datasets via `keras_topo.data`, plus a built-in tiny one.
- `run`: one resumable training run (`train`); `run_config`: `RunConfig`, its settings with one
  `Topography`; `run_folder`: `RunFolder`, the run folder's layout; `results`: `result.json`.
- `sweep`, `report`: grids of runs and the paper-format tables.
- `prune_sweep`: accuracy of a trained run pruned at a range of fractions.
- `study`, `study_report`: the pruning study (variants x seeds x pruning methods), resumable.

Each submodule is imported on first use: `import keras_topo` then `keras_topo.experiments.run`.
"""

import importlib
import importlib.util


def __getattr__(name):
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
