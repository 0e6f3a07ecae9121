r"""The `keras-topo` command: train, sweep, report, prune, figures, demo.

    keras-topo demo                                   # minutes on a CPU, no download
    keras-topo train --dataset cifar10 --model resnet18 --topography grid --lambda 1 \
        --seed 0 --data-dir DATA --out runs/cifar10-grid-s0
    keras-topo sweep --dataset cifar10 --data-dir DATA --runs-dir runs \
        --organisations baseline grid --lambdas 0.5 1 --seeds 0 1 2 3 4
    keras-topo report runs
    keras-topo prune --run runs/A --run runs/B --fractions 0:1:0.05 --criterion l2
    keras-topo figures --run runs/A --run runs/B --out figures
    keras-topo export runs/A --format litert --prune 0.5 --int8
    keras-topo study --spec cifar10 --data-dir DATA --runs-dir runs/study
    keras-topo vit-study --spec cpu --data-dir DATA --runs-dir runs/vit-study
    keras-topo doctor                                 # backend, versions, CPU, what to change

Every training knob defaults to the paper's recipe (`keras_topo.training_recipe`). The
`keras-topo` script (`keras_topo_launcher`) sets the fast path's environment before Keras
loads (TF's oneDNN kernels, OMP_WAIT_POLICY=PASSIVE; the user's own values win) and hides
TensorFlow's log lines unless `--backend-logs` is given.
"""

import argparse
import dataclasses
import logging
import os
import sys

from absl import logging as absl_logging

from keras_topo import demo, distribute, doctor, objectives, positions, training_recipe
from keras_topo.applications import BUILDERS
from keras_topo.experiments import (
    datasets,
    export_run,
    fast_path,
    prune_sweep,
    report,
    run,
    run_lock,
    study,
    sweep,
    vit_study,
)
from keras_topo.export import FORMATS as EXPORT_FORMATS
from keras_topo.topography import REDUCTIONS, Topography
from keras_topo_launcher import BACKEND_LOGS_FLAG

_TOPOGRAPHY_DEFAULTS = Topography()


def main(argv=None):
    """Entry point of the `keras-topo` console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.backend_logs:
        _hide_backend_logs()
    try:
        _check_folders(args)
        args.handler(args)
    except ValueError as error:  # Bad input: one clear line, no traceback.
        parser.exit(2, f"keras-topo {args.command}: error: {error}\n")
    return 0


def _hide_backend_logs():
    """Hides TensorFlow's and absl's Python log lines below ERROR (retracing warnings...)."""
    absl_logging.set_verbosity(absl_logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


# The folder each command writes into (checked before it writes anything).
_OUTPUT_FOLDER = {
    "train": "out",
    "sweep": "runs_dir",
    "report": "out",
    "figures": "out",
    "demo": "out",
}


def _check_folders(args):
    """Raises `ValueError` naming the flag of an unusable input or output folder."""
    output = _OUTPUT_FOLDER.get(args.command)
    if output and getattr(args, output, None):
        run_lock.check_writable_folder(getattr(args, output), "--" + output.replace("_", "-"))
    inputs = [("--data-dir", getattr(args, "data_dir", None))]
    inputs += [("--run", folder) for folder in getattr(args, "run", None) or ()]
    if args.command == "report":
        inputs.append(("runs_dir", args.runs_dir))
    for flag, folder in inputs:
        if folder is not None and not os.path.isdir(folder):
            raise ValueError(f"{flag} {folder}: no such folder.")


def _train(args):
    result = run.train(_run_config(args, out=args.out))
    _print_result(result, args.out)


def _sweep(args):
    base = _run_config(args, out=args.runs_dir)
    configs = sweep.grid(
        base, args.runs_dir, args.models, args.organisations, args.lambdas, args.seeds
    )
    sweep.run_sweep(configs)
    markdown, md_path, csv_path = report.write(args.runs_dir)
    print(markdown)
    print(f"Tables: {md_path} and {csv_path}")


def _report(args):
    markdown, md_path, csv_path = report.write(args.runs_dir, args.out)
    print(markdown)
    print(f"Tables: {md_path} and {csv_path}")


def _prune(args):
    fractions = prune_sweep.parse_fractions(args.fractions)
    for run_dir in args.run:
        sweep = prune_sweep.prune_sweep(
            run_dir,
            fractions,
            criterion=args.criterion,
            mode=args.mode,
            layers=args.layers,
            seed=args.seed,
            data_dir=args.data_dir,
            finetune_epochs=args.finetune_epochs,
            keep_topography=args.finetune_topography == "keep",
        )
        stem = prune_sweep.sweep_stem(run_dir, args.criterion, args.mode, args.finetune_epochs)
        print(f"{run_dir} ({sweep['organisation']}, layers {', '.join(sweep['layers'])}):")
        for point in sweep["points"]:
            line = f"  {100 * point['fraction']:5.1f}% pruned: {100 * point['accuracy']:6.2f}%"
            if args.finetune_epochs:
                line += f" -> {100 * point['finetuned_accuracy']:6.2f}% fine-tuned"
            print(line)
        print(f"  -> {stem}.json and {stem}.csv")


def _export(args):
    quantize = "int8" if args.int8 else "float16" if args.float16 else None
    try:
        export_run.export_run(
            args.run_dir,
            args.format,
            out=args.out,
            prune=args.prune,
            quantize=quantize,
            criterion=args.criterion,
            finetune_epochs=args.finetune_epochs,
            data_dir=args.data_dir,
        )
    except (FileExistsError, FileNotFoundError, ImportError) as error:
        raise ValueError(str(error)) from None


def _figures(args):
    # matplotlib: the "experiments" extra
    from keras_topo.figures import draw_map_figures, draw_run_figures

    paths = draw_run_figures(
        args.out,
        args.run or (),
        layer=args.layer,
        data_dir=args.data_dir,
        max_batches=args.max_batches,
    )
    paths += draw_map_figures(args.out, args.run or ())
    print("Figures:\n" + "\n".join(f"  {path}" for path in paths))


def _study(args):
    markdown, md_path, png_path = study.run_study(
        study.load_spec(args.spec), args.runs_dir, args.data_dir
    )
    print(markdown)
    print(f"Study: {md_path} and {png_path}")


def _vit_study(args):
    markdown, path = vit_study.run_study(
        vit_study.load_spec(args.spec), args.runs_dir, args.data_dir
    )
    print(markdown)
    print(f"ViT study: {path}")


def _demo(args):
    demo.run_demo(args.out, epochs=args.epochs)


def _doctor(args):
    print(doctor.describe(doctor.facts()))


def _run_config(args, out):
    """The flags' `RunConfig`. Its `Topography` is built once, from the flags named as its
    fields (`--topography` gives the scheme): a sweep's is the template of its organisations;
    `train` without `--topography` is the baseline (its topographic flags checked all the same)."""
    values = vars(args)
    settings = {f.name: values[f.name] for f in dataclasses.fields(Topography) if f.name in values}
    topography = Topography(values.get("topography") or _TOPOGRAPHY_DEFAULTS.scheme, **settings)
    baseline = args.command == "train" and args.topography is None
    fields = {f.name for f in dataclasses.fields(run.RunConfig)} - {"topography", "out"}
    chosen = {key: value for key, value in values.items() if key in fields}
    return run.RunConfig(**chosen, topography=None if baseline else topography, out=out)


def _print_result(result, out):
    test = ", ".join(f"{key} {value:.4f}" for key, value in sorted(result["test"].items()))
    print(
        f"{out}: {result['organisation']}, best epoch {result['best_epoch']} "
        f"(val accuracy {result['best_val_accuracy']:.4f}); test: {test}"
    )


def _add_training_args(parser):
    parser.add_argument("--dataset", choices=datasets.DATASETS, required=True)
    parser.add_argument("--data-dir", help="folder holding the dataset (not for digits)")
    # The topographic options map one to one onto the fields of `keras_topo.Topography`.
    parser.add_argument(
        "--reduction",
        choices=REDUCTIONS,
        default=_TOPOGRAPHY_DEFAULTS.reduction,
        help="combine the layers' losses: lambda * mean (paper) or sum (reference code)",
    )
    parser.add_argument(
        "--distance", choices=positions.DISTANCES, default=_TOPOGRAPHY_DEFAULTS.distance
    )
    parser.add_argument(
        "--objective",
        choices=objectives.OBJECTIVES,
        default=_TOPOGRAPHY_DEFAULTS.objective,
        help="activation (the paper's), weights (TopoLoss) or spatial (TDANN)",
    )
    parser.add_argument(
        "--shrink-factor",
        type=float,
        default=_TOPOGRAPHY_DEFAULTS.shrink_factor,
        help="sheet down-scaling of --objective weights",
    )
    parser.add_argument(
        "--neighbourhoods",
        type=int,
        help="--objective spatial: TopoLM's K neighbourhoods sampled per step (default: all pairs)",
    )
    parser.add_argument(
        "--radius", type=float, help="--neighbourhoods' radius, in position units (grid: [0, 1])"
    )
    parser.add_argument("--nested-factor", type=float, default=_TOPOGRAPHY_DEFAULTS.nested_factor)
    parser.add_argument("--epochs", type=int, help="default: the paper's for the dataset")
    parser.add_argument("--batch-size", type=int, default=training_recipe.BATCH_SIZE)
    parser.add_argument("--learning-rate", type=float, default=training_recipe.LEARNING_RATE)
    parser.add_argument("--momentum", type=float, default=training_recipe.MOMENTUM)
    parser.add_argument("--weight-decay", type=float, default=training_recipe.WEIGHT_DECAY)
    parser.add_argument(
        "--weight-decay-mode",
        choices=training_recipe.WEIGHT_DECAY_MODES,
        default="coupled",
        help="coupled: torch's SGD (wd*w added to the gradient, the paper's); "
        "decoupled: Keras' SGD(weight_decay=)",
    )
    parser.add_argument("--warmup-fraction", type=float, default=training_recipe.WARMUP_FRACTION)
    parser.add_argument("--train-subset", type=int, help="train on a fixed sample of N examples")
    parser.add_argument("--width-multiplier", type=float, default=1.0)
    parser.add_argument(
        "--jit-compile",
        choices=("default", "auto", "true", "false"),
        default="default",
        help="default: False on CPU, 'auto' on accelerators",
    )
    parser.add_argument(
        "--precision",
        choices=fast_path.PRECISIONS,
        default="float32",
        help="Keras dtype policy of the run (mixed: float16/bfloat16 compute, float32 weights)",
    )
    parser.add_argument("--distribute", choices=distribute.NAMES, default="none")
    parser.add_argument(
        "--verbose",
        default="auto",
        type=_verbosity,
        help="Keras progress: auto, 0, 1 (bar) or 2 (one line per epoch)",
    )


def _verbosity(text):
    return text if text == "auto" else int(text)


def _parser():
    parser = argparse.ArgumentParser(
        prog="keras-topo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        BACKEND_LOGS_FLAG,
        dest="backend_logs",
        action="store_true",
        help="show TensorFlow's and absl's log lines (device probing, retracing), hidden by default",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train (or resume) one run")
    _add_training_args(train)
    train.add_argument("--model", choices=tuple(BUILDERS), default="resnet18")
    train.add_argument(
        "--topography",
        choices=tuple(positions.SCHEME_DIMENSIONS),
        help="position scheme; omit for the baseline",
    )
    train.add_argument("--dimension", type=int)
    train.add_argument("--lambda", dest="weight", type=float, default=_TOPOGRAPHY_DEFAULTS.weight)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", required=True, help="the run's folder")
    train.set_defaults(handler=_train)

    sweep = commands.add_parser("sweep", help="train the missing runs of a grid, then report")
    _add_training_args(sweep)
    sweep.add_argument("--models", nargs="+", choices=tuple(BUILDERS), default=["resnet18"])
    sweep.add_argument(
        "--organisations",
        nargs="+",
        default=["baseline", "grid"],
        help="'baseline' and schemes, optionally with a dimension: grid-3d",
    )
    sweep.add_argument("--lambdas", nargs="+", type=float, default=[1.0])
    sweep.add_argument("--seeds", nargs="+", type=int, default=[0])
    sweep.add_argument("--runs-dir", required=True)
    sweep.set_defaults(handler=_sweep)

    report = commands.add_parser("report", help="Markdown + CSV tables of the runs in a folder")
    report.add_argument("runs_dir")
    report.add_argument("--out", help="where to write results.md/.csv (default: runs_dir)")
    report.set_defaults(handler=_report)

    prune = commands.add_parser("prune", help="test accuracy of trained runs pruned at fractions")
    prune.add_argument("--run", action="append", required=True, help="a run folder (repeatable)")
    prune.add_argument("--fractions", default="0:1:0.05", help="start:stop:step or a,b,c")
    prune.add_argument("--criterion", choices=("l2", "l1", "random"), default="l2")
    prune.add_argument("--mode", choices=("mask", "remove"), default="mask")
    prune.add_argument("--layers", nargs="+", help="default: the run's topographic layers")
    prune.add_argument("--seed", type=int, default=0, help="for --criterion random")
    prune.add_argument("--data-dir", help="default: the run's")
    prune.add_argument(
        "--finetune-epochs",
        type=int,
        default=0,
        help="fine-tune each pruned model N epochs (needs --mode remove); default 0: none",
    )
    prune.add_argument(
        "--finetune-topography",
        choices=("keep", "strip"),
        default="keep",
        help="fine-tune with the topographic losses on (keep) or off (strip)",
    )
    prune.set_defaults(handler=_prune)

    ship = commands.add_parser("export", help="a run's best model as SavedModel, LiteRT or ONNX")
    ship.add_argument("run_dir", help="a finished run's folder")
    ship.add_argument("--format", choices=EXPORT_FORMATS, required=True)
    ship.add_argument("--prune", type=float, help="prune this fraction of channels first")
    ship.add_argument("--criterion", choices=("l2", "l1", "random"), default="l2")
    ship.add_argument("--finetune-epochs", type=int, default=0, help="after --prune")
    precision = ship.add_mutually_exclusive_group()
    precision.add_argument(
        "--int8", action="store_true", help="calibrated on the run's training split"
    )
    precision.add_argument("--float16", action="store_true", help="LiteRT only")
    ship.add_argument("--out", help="default: RUN/export/best[-pruned50][-int8].<suffix>")
    ship.add_argument("--data-dir", help="default: the run's")
    ship.set_defaults(handler=_export)

    figures = commands.add_parser("figures", help="PNG figures: schemes, topography, pruning")
    figures.add_argument("--run", action="append", help="a run folder (repeatable)")
    figures.add_argument("--out", required=True)
    figures.add_argument("--layer", help="default: the last topographic layer")
    figures.add_argument("--data-dir", help="default: the run's")
    figures.add_argument("--max-batches", type=int, help="test batches to analyse (default: all)")
    figures.set_defaults(handler=_figures)

    study = commands.add_parser("study", help="train, prune and analyse a study (resumable)")
    study.add_argument("--spec", required=True, help="smoke, cifar10, paper or a JSON file")
    study.add_argument("--runs-dir", required=True)
    study.add_argument("--data-dir", help="folder holding the dataset (not for digits)")
    study.set_defaults(handler=_study)

    vit_study = commands.add_parser(
        "vit-study", help="a small ViT with each topographic objective: maps, pruning (resumable)"
    )
    vit_study.add_argument("--spec", required=True, help="cpu, accelerator or a JSON file")
    vit_study.add_argument("--runs-dir", required=True)
    vit_study.add_argument("--data-dir", help="folder holding CIFAR-10 (not for digits)")
    vit_study.set_defaults(handler=_vit_study)

    demo = commands.add_parser("demo", help="a small end-to-end run on scikit-learn's digits")
    demo.add_argument("--out", default="keras-topo-demo")
    demo.add_argument("--epochs", type=int, default=10)
    demo.set_defaults(handler=_demo)

    doctor = commands.add_parser(
        "doctor", help="backend, versions, CPU features, thread and kernel settings, what to change"
    )
    doctor.set_defaults(handler=_doctor)
    return parser


if __name__ == "__main__":  # without the fast path's environment: use the `keras-topo` script
    sys.exit(main())
