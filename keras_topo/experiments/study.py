"""The pruning study of issue 22 as one resumable command (`keras-topo study --spec NAME|FILE`).

For each seed and variant (baseline, the paper's loss at two weights, TDANN's spatial loss,
TopoLoss), it trains the run (`run.train`: a finished run is not retrained, an interrupted one
resumes from its last epoch), prunes its best checkpoint's topographic layers (the baseline:
those its architecture makes topographic) at each fraction with each method (`prune_sweep`:
stored fractions are skipped), measures raw cosine against Pearson similarity (`similarity.json`, see
`keras_topo.metrics.similarity_ordering`), then writes `study.md` and `study.png`
(`study_report`). Runs go to `<runs_dir>/<variant>-seed<s>`; a killed study continues where it
stopped when the same command runs again.

Built-in specs (`SPECS`): "smoke" (digits, tiny: a test runs it), "cifar10" (full CIFAR-10,
45k/5k split, width 0.25, 2 seeds: the CPU scale) and "paper" (full width, the paper's 100
epochs, 5 seeds: for an accelerator). A JSON file holds `StudySpec` fields, optionally
`"base": "<built-in name>"` to start from; `variants` is a list of `Variant` field dicts.
"""

import dataclasses
import json
from pathlib import Path

import keras

from keras_topo.experiments import (
    datasets,
    prune_sweep,
    results,
    run,
    run_lock,
    study_report,
    sweep,
)
from keras_topo.experiments.run_folder import RunFolder
from keras_topo.metrics.similarity_ordering import measure_similarity_ordering
from keras_topo.topography import Topography


@dataclasses.dataclass(frozen=True)
class Variant:
    """One trained organisation: `topography=None` is the baseline."""

    name: str
    topography: str | None = None
    objective: str = "activation"
    weight: float = 1.0
    reduction: str = "mean"

    def settings(self):
        """The variant's `keras_topo.Topography`, or None for the baseline."""
        if self.topography is None:
            return None
        return Topography(
            self.topography, objective=self.objective, weight=self.weight, reduction=self.reduction
        )


# Pruning methods: name -> (criterion, compensate). All mask the paper's five layers with
# `coupling="expand"`; the redundancy ones read `calibration_size` training images.
METHODS = {
    "l2": ("l2", False),
    "l1": ("l1", False),
    "random": ("random", False),
    "redundancy": ("redundancy", False),
    "redundancy-compensated": ("redundancy", True),
}

VARIANTS = (
    Variant("baseline"),
    Variant("paper-lam1-sum", "grid", "activation", 1.0, "sum"),  # the paper's setting
    Variant("paper-lam10-sum", "grid", "activation", 10.0, "sum"),
    Variant("tdann-spatial-lam1", "grid", "spatial", 1.0, "mean"),  # the objectives study's
    Variant("topoloss-lam1", "grid", "weights", 1.0, "mean"),
)


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """What the study trains and how it prunes (every run shares all but variant and seed)."""

    dataset: str
    epochs: int
    width_multiplier: float
    seeds: tuple = (0, 1)
    batch_size: int = 128
    train_subset: int | None = None
    model: str = "resnet18"
    variants: tuple = VARIANTS
    methods: tuple = tuple(METHODS)
    fractions: tuple = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    calibration_size: int = 2048
    verbose: int = 2

    def __post_init__(self):
        check_study_fields(self, METHODS)
        if int(self.calibration_size) < 1:
            raise ValueError(f"calibration_size must be positive, got {self.calibration_size}.")


def check_study_fields(spec, methods):
    """The checks every study spec shares (this one's and the ViT study's): its `methods`
    among `methods`, `fractions` in [0, 1), variants with distinct names, seeds >= 0."""
    unknown = [m for m in spec.methods if m not in methods]
    if unknown or not spec.methods:
        raise ValueError(f"methods {list(spec.methods)}: choose from {list(methods)}.")
    if not spec.fractions or any(not 0.0 <= float(f) < 1.0 for f in spec.fractions):
        raise ValueError(f"fractions {spec.fractions}: give at least one, each in [0, 1).")
    names = [v.name for v in spec.variants]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"variants {names}: give at least one, each with its own name.")
    if not spec.seeds or any(int(s) < 0 for s in spec.seeds):
        raise ValueError(f"seeds {spec.seeds}: give at least one non-negative seed.")


SPECS = {
    "smoke": StudySpec(  # width 0.25: TopoLoss' shrink factor 3 needs a 4x4 sheet at the stem
        dataset="digits",
        epochs=4,
        width_multiplier=0.25,
        seeds=(0, 1),
        batch_size=64,
        fractions=(0.0, 0.4, 0.8),
        calibration_size=256,
        verbose=0,
    ),
    "cifar10": StudySpec(dataset="cifar10", epochs=15, width_multiplier=0.25, seeds=(0, 1)),
    "paper": StudySpec(
        dataset="cifar10", epochs=100, width_multiplier=1.0, seeds=(0, 1, 2, 3, 4), batch_size=256
    ),
}


def load_spec(name_or_path, specs=None, spec_class=StudySpec):
    """A built-in spec by name (`specs`, default `SPECS`), or a JSON file of `spec_class`
    fields (`"base"`: a built-in spec to start from). The ViT study passes its own."""
    specs = SPECS if specs is None else specs
    if name_or_path in specs:
        return specs[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(
            f"--spec {name_or_path}: neither a built-in spec {sorted(specs)} nor a JSON file."
        )
    fields = json.loads(path.read_text())
    base = fields.pop("base", None)
    if base is not None and base not in specs:
        raise ValueError(f"{path}: base {base!r} is not a built-in spec {sorted(specs)}.")
    known = {f.name for f in dataclasses.fields(spec_class)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"{path}: unknown fields {unknown}; a spec has {sorted(known)}.")
    if "variants" in fields:
        try:
            fields["variants"] = tuple(Variant(**v) for v in fields["variants"])
        except TypeError as error:
            raise ValueError(f"{path}: a variant is not a Variant's fields: {error}") from None
    for key in ("seeds", "methods", "fractions"):
        if key in fields:
            fields[key] = tuple(fields[key])
    if base is not None:
        return dataclasses.replace(specs[base], **fields)
    return spec_class(**fields)


def run_configs(spec, runs_dir, data_dir=None):
    """`[(variant, RunConfig)]`, seed-major (an interrupted study covers every variant first)."""
    configs = []
    for seed in spec.seeds:
        for variant in spec.variants:
            config = run.RunConfig(
                dataset=spec.dataset,
                model=spec.model,
                topography=variant.settings(),
                seed=int(seed),
                data_dir=data_dir,
                out=str(Path(runs_dir) / f"{variant.name}-seed{seed}"),
                epochs=spec.epochs,
                batch_size=spec.batch_size,
                train_subset=spec.train_subset,
                width_multiplier=spec.width_multiplier,
                verbose=spec.verbose,
            )
            configs.append((variant, config))
    return configs


def run_study(spec, runs_dir, data_dir=None, log=print):
    """Trains, prunes and analyses whatever is missing; writes and returns the report.

    A pruning method the pruner refuses for the model (its `ValueError`, e.g. compensation of
    a layer whose channels are summed with others' under `coupling="expand"`) is logged, skipped
    and named with its reason in the report; the other methods go on.

    Returns:
        `(markdown, md_path, png_path)` from `study_report.write`.
    """
    run_lock.check_writable_folder(runs_dir, "--runs-dir")
    if spec.dataset != "digits" and not (data_dir and Path(data_dir).is_dir()):
        raise ValueError(f"--data-dir {data_dir}: no such folder ({spec.dataset}'s data).")
    configs = run_configs(spec, runs_dir, data_dir)
    check_variants(configs)
    refused = {}
    for index, (variant, config) in enumerate(configs, start=1):
        log(f"[{index}/{len(configs)}] {variant.name}, seed {config.seed}")
        if not sweep.run_sweep([config], log=log):
            continue  # diverged: no result, nothing to prune
        for method in spec.methods:
            criterion, compensate = METHODS[method]
            keras.backend.clear_session()
            try:
                prune_sweep.prune_sweep(
                    config.out,
                    list(spec.fractions),
                    criterion=criterion,
                    mode="mask",
                    calibration_size=spec.calibration_size if criterion == "redundancy" else None,
                    compensate=compensate,
                    log=log,
                )
            except ValueError as error:  # the pruner's refusal of this setting for this model
                log(f"{config.out}: method {method} refused by the pruner: {error}")
                refused.setdefault(method, str(error))
        record_similarity(config)
    return study_report.write(spec, collect(spec, runs_dir), runs_dir, refused)


def check_variants(configs):
    """Builds each variant's model once, so that a setting its layers refuse (e.g. a TopoLoss
    shrink factor larger than a layer's sheet) stops the study before any run, not after some."""
    first = configs[0][1]
    split = datasets.load(first.dataset, "validation", first.data_dir, first.batch_size)
    for variant, config in {variant.name: (variant, c) for variant, c in configs}.values():
        try:
            run.build_model(config, split.input_shape, split.num_classes)
        except ValueError as error:
            raise ValueError(f"variant {variant.name!r}: {error}") from None
    keras.backend.clear_session()


SIMILARITY_FILE = RunFolder.SIMILARITY


def record_similarity(config):
    """Writes `<run>/similarity.json` (`measure_similarity_ordering` of the best checkpoint on
    the test split, a baseline scored as `run.scored_model`) unless it holds this checkpoint's."""
    folder = RunFolder(config.out)
    path = folder.similarity_path
    checkpoint = folder.checkpoint_identity()
    if path.exists() and json.loads(path.read_text()).get("checkpoint") == checkpoint:
        return
    keras.backend.clear_session()
    split = datasets.load(config.dataset, "test", config.data_dir, config.batch_size)
    model = run.scored_model(folder.load_best_model(), config)
    layers = measure_similarity_ordering(model, split.dataset)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"checkpoint": checkpoint, "layers": layers}, indent=2))
    tmp.replace(path)


def read_run(run_dir):
    """`(result, {method: sweep}, similarity layers or None)` of a study run folder, or None."""
    result = results.read(run_dir)
    if result is None or result.get("status") != "complete":
        return None
    sweeps = {}
    for method, (criterion, compensate) in METHODS.items():
        stem = RunFolder(run_dir).pruning_stem(criterion, "mask", compensate=compensate)
        if stem.with_suffix(".json").exists():
            sweeps[method] = json.loads(stem.with_suffix(".json").read_text())
    path = RunFolder(run_dir).similarity_path
    similarity = json.loads(path.read_text())["layers"] if path.exists() else None
    return result, sweeps, similarity


def collect(spec, runs_dir):
    """`{variant name: [(result, sweeps, similarity) per finished seed]}` in spec order
    (`read_run` of each of the spec's runs that finished)."""
    found = {}
    for variant, config in run_configs(spec, runs_dir):
        finished = read_run(config.out)
        if finished is not None:
            found.setdefault(variant.name, []).append(finished)
    return found
