"""`keras-topo demo`: the whole method end to end in minutes on a CPU, with no download.

On scikit-learn's handwritten digits (`keras_topo.experiments.digits`), it trains a small
ResNet-18 (width x0.25) as a baseline and with a 2D-grid topography (lambda 1), prunes the
paper's five layers of both at several fractions without retraining, prints the accuracy
table, writes the figures, and saves a pruned topographic net (channels really removed) as a
`.keras` file and a TensorFlow SavedModel.
"""

import shutil
from pathlib import Path

import keras

from keras_topo import pruning
from keras_topo.experiments import prune_sweep, report, run, sweep
from keras_topo.experiments.run_folder import RunFolder
from keras_topo.export import export_model

FRACTIONS = (0.0, 0.25, 0.5, 0.62, 0.75)
EXPORT_FRACTION = 0.5


def run_demo(
    out_dir="keras-topo-demo", epochs=10, fractions=FRACTIONS, train_subset=None, log=print
):
    """Runs the demo into `out_dir`; returns `{"table", "paths", "sweeps"}`.

    `train_subset` trains on that many digits only (for quick checks).
    """
    from keras_topo.figures import draw_run_figures  # matplotlib: the "experiments" extra

    out = Path(out_dir)
    runs_dir = out / "runs"
    base = run.RunConfig(
        dataset="digits",
        epochs=epochs,
        batch_size=64,
        width_multiplier=0.25,
        train_subset=train_subset,
        verbose=2,
    )
    configs = sweep.grid(base, runs_dir, ["resnet18"], ["baseline", "grid"], [1.0], [0])
    sweep.run_sweep(configs, log=log)
    markdown, md_path, _ = report.write(runs_dir)
    sweeps = [
        prune_sweep.prune_sweep(config.out, list(fractions), log=lambda _: None)
        for config in configs
    ]
    table = [
        {
            "fraction": point["fraction"],
            **{s["organisation"]: s["points"][i]["accuracy"] for s in sweeps},
        }
        for i, point in enumerate(sweeps[0]["points"])
    ]
    figures = draw_run_figures(out / "figures", [c.out for c in configs])
    topographic = next(c for c in configs if c.topography is not None)
    trained = RunFolder(topographic.out).load_best_model()
    pruned = pruning.prune_channels(trained, EXPORT_FRACTION, mode="remove")
    keras_path = out / "pruned_topographic.keras"
    pruned.save(keras_path)
    saved_model = _export(pruned, out / "pruned_topographic_savedmodel", log)

    log("\nTest accuracy (digits, ResNet-18 x0.25) after the training runs:\n" + markdown)
    log(f"Pruning the paper's layers ({', '.join(sweeps[1]['layers'])}), no retraining:")
    names = [s["organisation"] for s in sweeps]
    log("| pruned | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for row in table:
        cells = " | ".join(f"{100 * row[name]:.1f}%" for name in names)
        log(f"| {100 * row['fraction']:.0f}% | {cells} |")
    paths = {
        "runs": str(runs_dir),
        "table": str(md_path),
        "figures": [str(p) for p in figures],
        "pruned_keras": str(keras_path),
        "pruned_savedmodel": saved_model,
    }
    params = (pruned.count_params(), trained.count_params())
    log(
        f"\nPruned topographic net ({EXPORT_FRACTION:.0%} of the channels of each layer removed,"
        f" {params[0]:,} of {params[1]:,} parameters):"
    )
    for name, path in paths.items():
        log(f"  {name}: {path}")
    return {"table": table, "paths": paths, "sweeps": sweeps}


def _export(model, path, log):
    """SavedModel export (`keras_topo.export_model`: topography stripped, `model.export`);
    returns its path, or None where the backend cannot export (the `.keras` file is still
    written)."""
    if path.exists():  # a rerun of the demo replaces its own output
        shutil.rmtree(path)
    try:
        export_model(model, str(path), format="saved_model")
    except (ImportError, NotImplementedError, ValueError) as error:
        log(
            f"SavedModel export is not available on the {keras.backend.backend()} backend "
            f"({type(error).__name__}: {error}); the .keras file is written."
        )
        return None
    return str(path)
