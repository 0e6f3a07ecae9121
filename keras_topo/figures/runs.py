"""All figures for a set of trained runs (what `keras-topo figures` draws)."""

import json
from pathlib import Path

import numpy as np

from keras_topo import positions as positions_lib
from keras_topo.experiments import datasets, run
from keras_topo.experiments.run_folder import RunFolder
from keras_topo.figures.pruning_curve import plot_pruning_curves
from keras_topo.figures.schemes import plot_position_schemes
from keras_topo.figures.topography import layer_statistics, plot_topography
from keras_topo.topographic_conv import TopographicConv2D


def draw_run_figures(out_dir, run_dirs=(), layer=None, data_dir=None, max_batches=None):
    """Writes PNGs into `out_dir` and returns their paths.

    Always `positions.png` (the six schemes, 256 channels). With runs of one dataset (e.g. a
    baseline and a topographic run): `topography-<layer>.png` comparing them at `layer`
    (default: the topographic run's last topographic layer) on the test split (all of it, or
    its first `max_batches` batches: the split is in a fixed order, often sorted by class, so
    a few batches may hold few classes), and one `pruning-<criterion>-<mode>.png` per pruning
    sweep found in the runs (`RunFolder.pruning_sweeps`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_position_schemes(out / "positions.png")]
    folders = [RunFolder(r) for r in run_dirs]
    if not folders:
        return paths
    configs = [folder.read_config() for folder in folders]
    if len({c.dataset for c in configs}) > 1:
        raise ValueError("figures: give runs of a single dataset.")
    models = [folder.load_best_model() for folder in folders]
    config = configs[0]
    split = datasets.load(
        config.dataset, "test", data_dir or config.data_dir, batch_size=config.batch_size
    )
    layer = layer or _default_layer(models, configs)
    reference = _reference_positions(models, layer)
    panels = []
    mapped = set()  # one class map per organisation: more seeds only add curves
    for run_config, model in zip(configs, models, strict=True):
        similarity, class_means = layer_statistics(
            model, layer, split.dataset, split.num_classes, max_batches
        )
        target = model.get_layer(layer)
        points = target.positions if isinstance(target, TopographicConv2D) else reference
        if points is None:
            points = positions_lib.get("grid", target.filters)
        organisation = run_config.organisation
        panels.append(
            {
                "label": f"{organisation} s{run_config.seed}",
                "similarity": similarity,
                "class_means": class_means,
                "positions": np.asarray(points),
                "map": organisation not in mapped,
            }
        )
        mapped.add(organisation)
    paths.append(plot_topography(out / f"topography-{layer}.png", panels, layer, split.class_names))
    sweeps = {}
    for folder in folders:
        for path in folder.pruning_sweeps():
            sweeps.setdefault(path.stem, []).append(json.loads(path.read_text()))
    for stem, found in sorted(sweeps.items()):
        paths.append(plot_pruning_curves(out / f"{stem}.png", found))
    return paths


def _default_layer(models, configs):
    """The last topographic layer with a map (more than one pixel: on a 1x1 map the cosine
    similarity is only a sign) of the first run that has one; for baselines only, of the
    layers their architecture makes topographic (`run.topographic_layer_names`)."""
    runs = sorted(zip(models, configs, strict=True), key=lambda pair: pair[1].topography is None)
    for model, config in runs:  # the topographic runs first
        layers = [model.get_layer(name) for name in run.topographic_layer_names(model, config)]
        with_map = [lay for lay in layers if _pixels(lay) > 1]
        if with_map or layers:
            return (with_map or layers)[-1].name
    raise ValueError("figures: the runs have no topographic layer to draw; give --layer.")


def _pixels(layer):
    height, width = layer.output.shape[1:3]
    return (height or 2) * (width or 2)


def _reference_positions(models, layer):
    """A topographic run's positions at `layer`, for drawing baselines on the same map."""
    for model in models:
        target = model.get_layer(layer)
        if isinstance(target, TopographicConv2D):
            return target.positions
    return None
