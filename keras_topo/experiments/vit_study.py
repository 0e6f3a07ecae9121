"""The transformer study of issue 21: a small ViT with each topographic objective on its MLP
hidden layers, against a baseline (`keras-topo vit-study --spec NAME|FILE`).

For each seed and variant (baseline, the paper's activation loss, TDANN's spatial loss, TopoLoss
on the weights: `VARIANTS`), it trains `keras_topo.applications.ViT` (the variant's objective
on every MLP hidden layer, `make_topographic`), scores the maps of those layers
(`keras_topo.metrics.measure_topography` on test images, tokens as samples; a baseline
converted by `make_topographic` to the grid, same weights), then prunes the trained model without
fine-tuning: each fraction of the heads of every attention layer ("heads") or of the hidden
units of every MLP ("mlp"), by each method of `METHODS` (criterion and mode of
`keras_topo.pruning.prune_channels`), and evaluates on the test images.

Each run is one folder `<runs_dir>/<variant>-seed<s>` holding `trained.keras` (after training)
and `result.json` (when done); the same command run again skips finished runs and resumes an
interrupted one from its trained model. `vit_study.md` in `runs_dir` tabulates what is there.

Built-in specs (`SPECS`): "cpu" (CIFAR-10 32x32, a 6,000-image training subset, 4 epochs, 500
test images; patch 4, 4 blocks, width 64, 4 heads, MLP 128: minutes per run on 2 CPU cores) and
"accelerator" (all 45,000 training images, 100 epochs, 6 blocks of width 192, 6 heads, MLP 768,
3 seeds). A JSON file holds `ViTStudySpec` fields, optionally `"base": "<built-in name>"`.
"""

import dataclasses
import json
import time
from pathlib import Path

import keras
import numpy as np

from keras_topo import make_topographic, strip_topography
from keras_topo.applications import ViT, vit
from keras_topo.data.cifar import cifar_arrays, normalise
from keras_topo.experiments import digits, fast_path, results, run_lock, study
from keras_topo.experiments.study import VARIANTS as _CNN_STUDY_VARIANTS
from keras_topo.metrics import measure_topography
from keras_topo.pruning import prune_channels

# The CNN study's objectives, the paper's at its own setting (lambda 1, summed over layers).
VARIANTS = tuple(v for v in _CNN_STUDY_VARIANTS if v.name != "paper-lam10-sum")
DATASETS = ("cifar10", "digits")
TARGETS = ("heads", "mlp")  # what a pruning fraction removes: attention heads or MLP units
# Pruning methods: name -> (criterion, mode) of `prune_channels`. Heads and MLP units remove
# exactly as they mask (no LayerNormalization spans them), so one masked method checks that.
METHODS = {
    "l2": ("l2", "remove"),
    "l1": ("l1", "remove"),
    "random": ("random", "remove"),
    "l2-mask": ("l2", "mask"),
    "l1-mask": ("l1", "mask"),
    "random-mask": ("random", "mask"),
}
TRAINED_FILE = "trained.keras"
TRAINING_FILE = "training.json"
REPORT_FILE = "vit_study.md"


@dataclasses.dataclass(frozen=True)
class ViTStudySpec:
    """What the study trains (every run shares all but variant and seed) and how it prunes."""

    dataset: str = "cifar10"
    epochs: int = 4
    train_subset: int | None = 6000
    test_subset: int | None = 500
    validation_size: int = 5000  # CIFAR training images held out (unused here), as the paper
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    patch_size: int = 4
    num_blocks: int = 4
    hidden_dim: int = 64
    num_heads: int = 4
    mlp_dim: int = 128
    seeds: tuple = (0,)
    variants: tuple = VARIANTS
    methods: tuple = ("l2", "l1", "random", "l2-mask")
    fractions: tuple = (0.0, 0.25, 0.5, 0.75)
    verbose: int = 2

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset {self.dataset!r}: choose from {DATASETS}.")
        study.check_study_fields(self, METHODS)
        for key in ("epochs", "batch_size", "train_subset", "test_subset", "validation_size"):
            value = getattr(self, key)
            if value is not None and int(value) < 1:
                raise ValueError(f"{key} must be a positive integer (or None), got {value}.")

    def model_settings(self):
        """The `ViT` builder's size arguments."""
        keys = ("patch_size", "num_blocks", "hidden_dim", "num_heads", "mlp_dim")
        return {key: getattr(self, key) for key in keys}


SPECS = {
    "cpu": ViTStudySpec(),
    "accelerator": ViTStudySpec(
        epochs=100,
        train_subset=None,
        test_subset=None,
        batch_size=256,
        num_blocks=6,
        hidden_dim=192,
        num_heads=6,
        mlp_dim=768,
        seeds=(0, 1, 2),
        methods=tuple(METHODS),
        fractions=(0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75),
    ),
}


def load_spec(name_or_path):
    """A built-in spec by name (`SPECS`), or a JSON file of `ViTStudySpec` fields."""
    return study.load_spec(name_or_path, SPECS, ViTStudySpec)


def load_arrays(spec, split, data_dir=None):
    """`(images float32 (N, H, W, C), labels int32 (N,))` of "train" or "test", subset as
    `spec` says (a fixed sample), CIFAR normalised as the paper's pipeline."""
    subset = spec.train_subset if split == "train" else spec.test_subset
    if spec.dataset == "digits":
        images, labels = digits.arrays(split)
        keep = np.random.default_rng(0).permutation(len(labels))[:subset]
        return images[np.sort(keep)], labels[np.sort(keep)]
    if not (data_dir and Path(data_dir).is_dir()):
        raise ValueError(f"--data-dir {data_dir}: no such folder (CIFAR-10's images).")

    images, labels = cifar_arrays(
        data_dir, "cifar10", split, validation_size=spec.validation_size, subset=subset
    )
    return np.asarray(normalise(images)), labels


def build(spec, variant, input_shape, num_classes):
    """The variant's ViT: plain, or topographic on every MLP hidden layer."""
    topography = variant.settings()
    return ViT(input_shape, num_classes, topography=topography, **spec.model_settings())


def mlp_layers(spec):
    """Names of the MLP hidden layers (the topographic, scored and pruned "mlp" layers)."""

    return list(vit.mlp_widths(1.0, spec.num_blocks, spec.mlp_dim))


def run_settings(spec, variant, seed):
    """What identifies a run: the spec's training fields, the variant and the seed."""
    fields = dataclasses.asdict(spec)
    for key in ("seeds", "variants", "methods", "fractions", "verbose"):
        fields.pop(key)
    return {**fields, "variant": dataclasses.asdict(variant), "seed": int(seed)}


def run_study(spec, runs_dir, data_dir=None, log=print):
    """Trains, scores and prunes every run that is not finished; writes and returns the
    report `(markdown, path)`."""
    run_lock.check_writable_folder(runs_dir, "--runs-dir")
    train = load_arrays(spec, "train", data_dir)
    test = load_arrays(spec, "test", data_dir)
    runs = [(seed, variant) for seed in spec.seeds for variant in spec.variants]
    for index, (seed, variant) in enumerate(runs, start=1):
        folder = Path(runs_dir) / f"{variant.name}-seed{seed}"
        stored = results.read(folder)
        settings = json.loads(json.dumps(run_settings(spec, variant, seed)))
        if stored is not None:
            if stored.get("settings") != settings:
                raise ValueError(
                    f"{folder} holds a run of other settings; use another --runs-dir or "
                    "remove that folder."
                )
            log(f"[{index}/{len(runs)}] {folder.name}: finished, skipped")
            continue
        log(f"[{index}/{len(runs)}] {folder.name}")
        folder.mkdir(parents=True, exist_ok=True)
        with run_lock.lock_run_folder(folder):
            results.write(folder, run_one(spec, variant, seed, folder, train, test, log))
    return write_report(spec, runs_dir)


def run_one(spec, variant, seed, folder, train, test, log=print):
    """Trains (or loads `trained.keras`), scores and prunes one run; returns its result."""
    start = time.perf_counter()
    keras.backend.clear_session()
    model, training = _trained_model(spec, variant, seed, folder, train, log)
    resumed_train_s = training["train_s"] if training["loaded"] else 0.0
    accuracy = _accuracy(model, test, spec.batch_size)
    log(f"  test accuracy {accuracy:.4f}")
    scoring_start = time.perf_counter()
    maps = map_scores(model, spec, variant, test)
    scoring_s = time.perf_counter() - scoring_start
    pruning_start = time.perf_counter()
    pruning = prune_points(model, spec, seed, test, accuracy, log)
    return {
        "status": "complete",
        "settings": run_settings(spec, variant, seed),
        "backend": keras.backend.backend(),
        "versions": results.versions(),
        "params": int(model.count_params()),
        "training": training,
        "test_accuracy": accuracy,
        "map_scores": maps,
        "pruning": pruning,
        "time_s": {
            "train": training["train_s"],
            "map_scores": round(scoring_s, 1),
            "pruning": round(time.perf_counter() - pruning_start, 1),
            # A resumed run's training happened in an earlier process: counted from its record.
            "run": round(time.perf_counter() - start + resumed_train_s, 1),
        },
    }


def _trained_model(spec, variant, seed, folder, train, log):
    """`(model, training record)`: loaded from `trained.keras`, or trained and saved there."""
    checkpoint, record = folder / TRAINED_FILE, folder / TRAINING_FILE
    settings = json.loads(json.dumps(run_settings(spec, variant, seed)))
    if checkpoint.exists() and record.exists():
        training = json.loads(record.read_text())
        if training.pop("settings", None) != settings:
            raise ValueError(
                f"{checkpoint} was trained with other settings; use another --runs-dir or "
                "remove that folder."
            )
        log(f"  {checkpoint} found: training skipped")
        return keras.saving.load_model(checkpoint, compile=False), {**training, "loaded": True}
    keras.utils.set_random_seed(int(seed))
    images, labels = train
    model = build(spec, variant, images.shape[1:], int(labels.max()) + 1)
    _compile(model, keras.optimizers.AdamW(spec.learning_rate, weight_decay=spec.weight_decay))
    start = time.perf_counter()
    history = model.fit(
        images,
        labels,
        batch_size=spec.batch_size,
        epochs=spec.epochs,
        shuffle=True,
        verbose=spec.verbose,
    )
    training = {
        "train_s": round(time.perf_counter() - start, 1),
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
    }
    model.save(checkpoint)
    record.write_text(json.dumps({**training, "settings": settings}, indent=2))
    return model, {**training, "loaded": False}


def _compile(model, optimizer="adam"):
    """Compiles for the backend's fast path (`fast_path.compile_options`: no XLA on a CPU)."""
    model.compile(
        optimizer,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        **fast_path.compile_options(),
    )


def _accuracy(model, test, batch_size):
    """Top-1 accuracy of `model` (compiled here for inference) on `test`."""
    _compile(model)
    images, labels = test
    logits = model.predict(images, batch_size=max(batch_size, 256), verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def map_scores(model, spec, variant, test):
    """`{layer: {score: float}}` of the MLP hidden layers on the test images: the scalar
    scores of `measure_topography`; a baseline scored on the grid `make_topographic` gives it (same weights)."""

    layers = mlp_layers(spec)
    scored = model if variant.topography is not None else make_topographic(model, layers, "grid")
    images, labels = test
    measured = measure_topography(scored, images, labels, layers=layers, batch_size=256)
    return {
        layer: {
            key: value
            for key, value in scores.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        for layer, scores in measured.items()
    }


def prune_points(model, spec, seed, test, accuracy, log=print):
    """`[{"target", "method", "fraction", "accuracy", "params"}]`: the plain copy of `model`
    pruned (no fine-tuning) at each fraction of each target by each method. Fraction 0 is the
    unpruned `accuracy`."""

    plain = strip_topography(model)
    mlp = set(mlp_layers(spec))
    selectors = {
        "heads": lambda layer: isinstance(layer, keras.layers.MultiHeadAttention),
        "mlp": lambda layer: layer.name in mlp,
    }
    points = []
    for target in TARGETS:
        for method in spec.methods:
            criterion, mode = METHODS[method]
            for fraction in spec.fractions:
                if fraction == 0:
                    pruned_accuracy, params = accuracy, plain.count_params()
                else:
                    pruned = prune_channels(
                        plain,
                        float(fraction),
                        criterion,
                        layers=selectors[target],
                        mode=mode,
                        seed=seed,
                    )
                    pruned_accuracy = _accuracy(pruned, test, spec.batch_size)
                    params = pruned.count_params()
                points.append(
                    {
                        "target": target,
                        "method": method,
                        "fraction": float(fraction),
                        "accuracy": pruned_accuracy,
                        "params": int(params),
                    }
                )
            log(
                f"  {target} {method}: "
                + ", ".join(
                    f"{p['fraction']:.2f}->{p['accuracy']:.3f}"
                    for p in points[-len(spec.fractions) :]
                )
            )
    return points


def write_report(spec, runs_dir):
    """Writes `vit_study.md` (the finished runs' table) into `runs_dir`; returns `(markdown,
    path)`."""
    rows = []
    for seed in spec.seeds:
        for variant in spec.variants:
            result = results.read(Path(runs_dir) / f"{variant.name}-seed{seed}")
            if result is not None:
                rows.append((variant.name, seed, result))
    markdown = report_markdown(spec, rows)
    path = Path(runs_dir) / REPORT_FILE
    path.write_text(markdown)
    return markdown, path


def report_markdown(spec, rows):
    """The study's tables from `[(variant name, seed, result)]`."""
    score_keys = sorted(
        {key for _, _, r in rows for scores in r["map_scores"].values() for key in scores}
        - {"channels"}
    )
    lines = [
        f"# ViT study ({spec.dataset}, {spec.epochs} epochs, train subset {spec.train_subset}, "
        f"test subset {spec.test_subset}; patch {spec.patch_size}, {spec.num_blocks} blocks, "
        f"width {spec.hidden_dim}, {spec.num_heads} heads, MLP {spec.mlp_dim})",
        "",
        "Map scores: mean over the MLP hidden layers (a baseline on the grid make_topographic gives it); p-values:"
        " the layers below 0.05.",
        "",
        "| variant | seed | test accuracy | params | train s | run s | "
        + " | ".join(score_keys)
        + " |",
        "|---" * (6 + len(score_keys)) + "|",
    ]
    for name, seed, r in rows:
        cells = [_score_cell(key, r["map_scores"].values()) for key in score_keys]
        lines.append(
            f"| {name} | {seed} | {r['test_accuracy']:.4f} | {r['params']} | "
            f"{r['time_s']['train']} | {r['time_s']['run']} | " + " | ".join(cells) + " |"
        )
    fractions = [float(f) for f in spec.fractions]
    for target in TARGETS:
        lines += [
            "",
            f"Test accuracy after pruning a fraction of the {target} (no fine-tuning):",
            "",
            "| variant | seed | method | " + " | ".join(f"{f:.3g}" for f in fractions) + " |",
            "|---" * (3 + len(fractions)) + "|",
        ]
        for name, seed, r in rows:
            for method in spec.methods:
                accuracy = {
                    p["fraction"]: p["accuracy"]
                    for p in r["pruning"]
                    if p["target"] == target and p["method"] == method
                }
                cells = [f"{accuracy[f]:.3f}" if f in accuracy else "" for f in fractions]
                lines.append(f"| {name} | {seed} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _score_cell(key, layers):
    """A map score over the layers: the mean, or for a p-value how many layers are below 0.05."""
    values = [scores[key] for scores in layers if key in scores]
    if not values:
        return ""
    if key.endswith("p_value"):
        return f"{sum(v < 0.05 for v in values)}/{len(values)}"
    return f"{np.mean(values):.3f}"
