"""All figures for a set of trained runs (what `keras-topo figures` draws)."""

import json
from pathlib import Path

import keras
import numpy as np

from keras_topo import positions as positions_lib
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
    a few batches may hold few classes), and one `pruning-<criterion>-<mode>.png` per pruning sweep found in the runs.
    """
    from keras_topo.experiments import datasets, prune_sweep, results

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_position_schemes(out / "positions.png")]
    run_dirs = [Path(r) for r in run_dirs]
    if not run_dirs:
        return paths
    configs = [prune_sweep.run_config(r) for r in run_dirs]
    if len({c.dataset for c in configs}) > 1:
        raise ValueError("figures: give runs of a single dataset.")
    models = [keras.saving.load_model(r / "best.keras", compile=False) for r in run_dirs]
    config = configs[0]
    split = datasets.load(
        config.dataset, "test", data_dir or config.data_dir, batch_size=config.batch_size
    )
    layer = layer or _default_layer(models, config, split)
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
        organisation = results.organisation(vars(run_config))
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
    for run_dir in run_dirs:
        for path in sorted(run_dir.glob("pruning-*.json")):
            sweeps.setdefault(path.stem, []).append(json.loads(path.read_text()))
    for stem, found in sorted(sweeps.items()):
        paths.append(plot_pruning_curves(out / f"{stem}.png", found))
    return paths


def _default_layer(models, config, split):
    from keras_topo.experiments import prune_sweep

    for model in models:
        layers = [lay for lay in model.layers if isinstance(lay, TopographicConv2D)]
        # On a 1x1 map the cosine similarity is only a sign: prefer the last layer with a map.
        with_map = [lay for lay in layers if _pixels(lay) > 1]
        if with_map or layers:
            return (with_map or layers)[-1].name
    return prune_sweep.twin_layers(config, split.input_shape, split.num_classes)[-1]


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
