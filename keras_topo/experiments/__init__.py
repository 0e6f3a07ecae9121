"""The paper's experiments, run end to end (what the `keras-topo` command calls).

- `recipe`: SGD + momentum, coupled (torch) or decoupled weight decay, warm-up + cosine decay.
- `datasets`, `digits`: the paper's datasets via `keras_topo.data`, plus a built-in tiny one.
- `run`: one resumable training run (`train`); `run_config`: `RunConfig`, its settings with one
  `Topography`; `run_folder`: `RunFolder`, the run folder's layout; `results`: `result.json`.
- `sweep`, `report`: grids of runs and the paper-format tables.
- `prune_sweep`: accuracy of a trained run pruned at a range of fractions.
- `study`, `study_report`: the pruning study (variants x seeds x pruning methods), resumable.
"""
