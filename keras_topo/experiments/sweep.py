"""A grid of runs over models, organisations, lambdas and seeds; runs or resumes what is missing.

Each run gets its own folder `<runs_dir>/<dataset>-<model>-<organisation>[-lam<lambda>]-seed<s>`;
the baseline has no lambda, so it runs once per model and seed.
"""

import dataclasses

import keras

from keras_topo import positions
from keras_topo.experiments import run
from keras_topo.experiments.divergence import TrainingDiverged
from keras_topo.experiments.run_folder import RunFolder
from keras_topo.topography import Topography


def parse_organisation(text, template=None):
    """The `Topography` an organisation names on the command line, `template`'s settings kept
    (default `Topography()`), or None: "baseline" -> None; "grid" -> grid at the scheme's
    first dimension; "nested-3d" -> nested in 3D."""
    if text == "baseline":
        return None
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
    return (template or Topography()).replace(scheme=name, dimension=dimension)


def run_name(config):
    """The folder name of a run within a sweep:
    `<dataset>-<model>-<organisation>[-lam<lambda>]-seed<s>`."""
    parts = [config.dataset, config.model, config.organisation]
    if config.topography is not None:
        parts.append(f"lam{config.topography.weight:g}")
    parts.append(f"seed{config.seed}")
    return "-".join(parts)


def grid(base, runs_dir, models, organisations, lambdas, seeds):
    """The sweep's `RunConfig`s: `base` with each combination swapped in, one folder each.

    `organisations` are names for `parse_organisation` (their other settings are
    `base.topography`'s, or the defaults when `base` is a baseline); the baseline runs once per
    model and seed, with no lambda.
    """
    configs = []
    for model in models:
        for organisation in organisations:
            topography = parse_organisation(organisation, base.topography)
            variants = (
                [None]
                if topography is None
                else [topography.replace(weight=float(weight)) for weight in lambdas]
            )
            for variant in variants:
                for seed in seeds:
                    config = dataclasses.replace(
                        base, model=model, topography=variant, seed=int(seed)
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
        folder = RunFolder(config.out)
        if folder.is_complete():
            log(f"[{index}/{len(configs)}] {config.out}: complete, skipped")
            finished.append(folder.read_result())
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
