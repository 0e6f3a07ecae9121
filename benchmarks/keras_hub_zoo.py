"""Every keras-hub image backbone (and one text backbone) through keras-topo's whole pipeline.

Each backbone is built small from its constructor (`tests/hub_models.py`: random weights, no
network) as `Input -> backbone -> pooling -> Dense(10)`, then:

- topographic: `make_topographic(model)` (defaults); the convs made topographic / all
  `Conv1D/2D/3D` with >= 3 filters, wherever they sit (nested models, custom layers), the
  other topographic layers (Dense, attention: transformers), and seconds;
- measure: `metrics.measure_topography` after one training step (16 samples): layers measured
  and their mean distance correlation;
- strip: `strip_topography`, max |stripped - topographic| output relative to the largest;
- prune 0.5: `prune_channels(topographic, 0.5)` (default layers: the topographic ones);
  params and MACs ratios (`pruning.compare`), seconds; remove = mask: max |remove - mask|
  relative to the largest output;
- `.keras`: save / load of the pruned model (the topographic one where pruning failed), max
  relative output difference;
- LiteRT: `export_model(..., "litert")` float and int8 of that model, max relative difference
  of the interpreter's output to Keras'.

A step that fails prints the first line of its error in its cell; the run goes on.

    KERAS_BACKEND=tensorflow nice -n 5 python benchmarks/keras_hub_zoo.py [--models ViT BERT]
"""

import argparse
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the shared builders

import hub_models  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_topo  # noqa: E402
from keras_topo.export import load_exported  # noqa: E402
from keras_topo.layer_selection import is_topographic  # noqa: E402
from keras_topo.pruning import compare, prune_channels  # noqa: E402

FRACTION = 0.5
CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
COLUMNS = (
    "backbone",
    "params",
    "topographic convs / convs",
    "other topographic",
    "topo s",
    "measure",
    "strip",
    "params ratio",
    "MACs ratio",
    "prune s",
    "remove = mask",
    ".keras",
    "LiteRT float",
    "LiteRT int8",
)


def every_layer(model):
    """All layers wherever they sit: nested models and custom layers' sublayers (Keras
    tracks them; `_flatten_layers` is how Keras itself lists them)."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def map_layers(model):
    """`(topographic convs, other topographic layers, plain convs with >= 3 filters)` anywhere
    in `model`."""
    layers = every_layer(model)
    topographic = [layer for layer in layers if is_topographic(layer)]
    convs = [layer for layer in topographic if isinstance(layer, CONVS)]
    others = [layer for layer in topographic if not isinstance(layer, CONVS)]
    plain = [layer for layer in layers if type(layer) in CONVS and layer.filters >= 3]
    return convs, others, plain


def relative_difference(got, want):
    got, want = (np.asarray(keras.ops.convert_to_numpy(a), dtype="float64") for a in (got, want))
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


def first_line(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:120] if text else ''}".replace("|", "/")


def where(error):
    """`(at path:line)` of the innermost keras_topo frame of the error's traceback."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if "keras_topo" in f.filename]
    return f"(at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""


class Row:
    """The cells of one backbone; `step(column, fn)` runs fn and records its cell or error."""

    def __init__(self, name):
        self.cells = dict.fromkeys(COLUMNS, "")
        self.cells["backbone"] = name
        self.errors = []

    def step(self, column, fn):
        try:
            return fn()
        except Exception as error:  # noqa: BLE001 - one failing step must not stop the run
            self.cells[column] = first_line(error)
            self.errors.append((column, error))
            return None

    def __str__(self):
        return "| " + " | ".join(self.cells[c] for c in COLUMNS) + " |"


def run(name, folder):
    row = Row(name)
    model = row.step("params", hub_models.BACKBONES[name])
    if model is None:
        return row
    row.cells["params"] = f"{model.count_params():,}"
    x, y = hub_models.sample_data(model, 16)
    topographic = row.step("topographic convs / convs", lambda: topographic_cells(row, model))
    if topographic is not None:
        row.step("measure", lambda: measure_cell(row, topographic, x, y))
        row.step("strip", lambda: strip_cell(row, topographic, x))
    pruned = None
    if topographic is not None:
        pruned = row.step("params ratio", lambda: prune_cells(row, topographic, x))
    shipped = pruned or topographic or model
    row.step(".keras", lambda: round_trip_cell(row, shipped, x, folder))
    for quantize, column in ((None, "LiteRT float"), ("int8", "LiteRT int8")):
        row.step(column, lambda q=quantize, c=column: litert_cell(row, shipped, x, q, c, folder))
    return row


def topographic_cells(row, model):
    start = time.perf_counter()
    topographic = keras_topo.make_topographic(model)
    row.cells["topo s"] = f"{time.perf_counter() - start:.1f}"
    made, others, _ = map_layers(topographic)
    row.cells["topographic convs / convs"] = f"{len(made)} / {len(map_layers(model)[2])}"
    row.cells["other topographic"] = f"{len(others)}"
    return topographic


def measure_cell(row, topographic, x, y):
    topographic.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    topographic.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = keras_topo.metrics.measure_topography(
            topographic, x, y, permutations=99, shuffles=10
        )
    measured = [s["distance_correlation"] for s in scores.values() if "skipped" not in s]
    mean = f", r {np.mean(measured):.2f}" if measured else ""
    row.cells["measure"] = f"{len(measured)} layers{mean}"


def strip_cell(row, topographic, x):
    plain = keras_topo.strip_topography(topographic)
    left = sum(is_topographic(layer) for layer in every_layer(plain))
    diff = relative_difference(plain(x, training=False), topographic(x, training=False))
    row.cells["strip"] = f"{diff:.0e}" + (f", {left} left" if left else "")


def prune_cells(row, topographic, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        removed = prune_channels(topographic, FRACTION)
        row.cells["prune s"] = f"{time.perf_counter() - start:.1f}"
        masked = prune_channels(topographic, FRACTION, mode="mask")
    diff = relative_difference(removed(x, training=False), masked(x, training=False))
    row.cells["remove = mask"] = f"{diff:.0e}"
    cost = compare(topographic, removed, repeats=0)
    row.cells["params ratio"] = f"{cost['params_ratio']:.3f}"
    row.cells["MACs ratio"] = f"{cost['macs_ratio']:.3f}"
    return removed


def round_trip_cell(row, model, x, folder):
    path = Path(folder) / f"{row.cells['backbone'].replace(' ', '_')}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    row.cells[".keras"] = f"{relative_difference(loaded(x), model(x)):.0e}"


def litert_cell(row, model, x, quantize, column, folder):
    path = Path(folder) / f"{row.cells['backbone'].replace(' ', '_')}_{quantize}.tflite"
    keras_topo.export_model(model, path, "litert", quantize=quantize, calibration_data=x)
    got = load_exported(path)(x[:1])
    row.cells[column] = f"{relative_difference(got, model(x[:1], training=False)):.0e}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help=f"of {list(hub_models.BACKBONES)}")
    args = parser.parse_args()
    names = args.models or list(hub_models.BACKBONES)
    unknown = sorted(set(names) - set(hub_models.BACKBONES))
    if unknown:
        raise SystemExit(f"unknown backbones {unknown}; choose from {list(hub_models.BACKBONES)}")
    import keras_hub

    print(f"keras-hub {keras_hub.__version__}, keras {keras.__version__}, fraction {FRACTION}")
    print("\n| " + " | ".join(COLUMNS) + " |\n" + "|---" * len(COLUMNS) + "|", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            rows.append(run(name, folder))
            print(rows[-1], flush=True)
            keras.backend.clear_session()
    print("\nerrors (first line, by step; where keras_topo last was on the stack):")
    for row in rows:
        for column, error in row.errors:
            print(f"- {row.cells['backbone']}, {column}: {first_line(error)} {where(error)}")


if __name__ == "__main__":
    from keras_topo.experiments.fast_path import settings_line

    print(settings_line(), flush=True)  # the backend, oneDNN and thread settings of this run
    main()
