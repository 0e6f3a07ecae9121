"""A grid of runs over models, organisations, lambdas and seeds; runs or resumes what is missing.

Each run gets its own folder `<runs_dir>/<dataset>-<model>-<organisation>[-lam<lambda>]-seed<s>`;
the baseline has no lambda, so it runs once per model and seed.
"""

import dataclasses

import keras

from keras_topo import positions
from keras_topo.experiments import results, run
from keras_topo.experiments.divergence import TrainingDiverged


def parse_organisation(text):
    """ "baseline" -> (None, None); "grid" -> ("grid", None); "nested-3d" -> ("nested", 3)."""
    if text == "baseline":
        return None, None
    name, _, dim = text.partition("-")
    if name not in positions.SCHEME_DIMENSIONS or (dim and not dim.rstrip("d").isdigit()):
        raise ValueError(
            f"Unknown organisation {text!r}: use 'baseline' or a scheme "
            f"{sorted(positions.SCHEME_DIMENSIONS)} optionally with its dimension, e.g. 'grid-3d'."
        )
    dimension = int(dim.rstrip("d")) if dim else None
    if dimension is not None and dimension not in positions.SCHEME_DIMENSIONS[name]:
        raise ValueError(
            f"Organisation {text!r}: {name} supports dimensions "
            f"{positions.SCHEME_DIMENSIONS[name]}."
        )
    return name, dimension


def run_name(config):
    """The folder name of a run within a sweep."""
    parts = [config.dataset, config.model, results.organisation(dataclasses.asdict(config))]
    if config.topography is not None:
        parts.append(f"lam{config.topographic_weight:g}")
    parts.append(f"seed{config.seed}")
    return "-".join(parts)


def grid(base, runs_dir, models, organisations, lambdas, seeds):
    """The sweep's `RunConfig`s: `base` with each combination swapped in, one folder each."""
    configs = []
    for model in models:
        for organisation in organisations:
            topography, dimension = parse_organisation(organisation)
            weights = [base.topographic_weight] if topography is None else lambdas
            for weight in weights:
                for seed in seeds:
                    config = dataclasses.replace(
                        base,
                        model=model,
                        topography=topography,
                        dimension=dimension,
                        topographic_weight=float(weight),
                        seed=int(seed),
                    )
                    config.out = f"{runs_dir}/{run_name(config)}"
                    configs.append(config)
    return configs


def run_sweep(configs, log=print):
    """Trains every config whose folder has no complete result (resuming unfinished ones).

    A run that diverges (`TrainingDiverged`: no result is written) is reported and skipped, so
    one bad setting does not stop the sweep; the others' results are returned.
    """
    finished, diverged = [], []
    for index, config in enumerate(configs, start=1):
        done = results.read(config.out)
        if done is not None and done.get("status") == "complete":
            log(f"[{index}/{len(configs)}] {config.out}: complete, skipped")
            finished.append(done)
            continue
        log(f"[{index}/{len(configs)}] {config.out}: training")
        keras.backend.clear_session()
        try:
            result = run.train(config)
        except TrainingDiverged as error:  # recorded as failed, the other runs go on
            log(f"[{index}/{len(configs)}] {config.out}: diverged, no result recorded ({error})")
            diverged.append(config.out)
            continue
        log(
            f"[{index}/{len(configs)}] {config.out}: test accuracy {result['test']['accuracy']:.4f}"
        )
        finished.append(result)
    if diverged:
        log(f"{len(diverged)} run(s) diverged (non-finite loss): {', '.join(diverged)}")
    return finished
