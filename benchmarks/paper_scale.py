"""The paper's scale in one resumable command: train, prune and report ResNet-18 on CIFAR-10.

Runs the `keras-topo` CLI, one process per step, each resumable:

1. `keras-topo sweep`, seed by seed (an interrupted study then covers every arm): the full
   recipe (`keras_topo.training_recipe`: the paper's epochs, batch 256), full width
   ResNet-18, seeds 0-4, for each arm: "baseline" and the paper's topographic setting
   "activation:1" (grid positions at the paper's five layers, lambda 1, the layers' losses
   summed); `--arms` takes others ("<objective>:<lambda>"). A finished run is skipped; an
   interrupted one resumes from its last finished epoch.
2. `keras-topo prune` of every finished run at `--fractions` for each of `--criteria` (masks of
   the paper's five layers, no retraining; "l2" is the paper's); a run whose pruning file for
   the criterion exists is skipped.
3. `keras-topo report` (test accuracy mean ± std, map scores: `results.md`) and
   `keras-topo figures` (pruning curves, topography) into `RUNS_DIR/figures`.

Before starting it prints the plan and its expected time on one GPU from `gpu_bench.py`'s
figures (`--bench runs/gpu_bench.json`: the rows of `--backend`, default `$KERAS_BACKEND`, and
`--precision`); every topographic arm is costed at the paper objective's measured step.

`--study SPEC` runs issue 22's study instead (`keras-topo study --spec SPEC`, "paper": the
same recipe and seeds for the baseline, the paper's loss at lambda 1 and 10, TDANN's spatial
loss and TopoLoss, pruned by L1, L2, random and redundancy masks; its own resumable runs and
report), with its expected time computed the same way.

    python benchmarks/paper_scale.py --data-dir CIFAR --runs-dir runs/paper --bench runs/gpu_bench.json
        [--study paper] [--seeds 0 1 2 3 4] [--criteria l2 l1 random] [--dry-run] [-- SWEEP FLAGS]

`--data-dir` holds CIFAR-10 with its test split (the official python archive, or `train/` and
`test/` image folders). Flags after `--` go to every `keras-topo sweep` (e.g. `--jit-compile
auto`). Run the same command again to resume. A CPU smoke test of the commands:
`--dataset digits --epochs 1 --width-multiplier 0.125 --seeds 0 --fractions 0,0.5` (with a
"weights:1" arm add `-- --shrink-factor 2`: TopoLoss' default 3 needs 16 channels at the stem).
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import gpu_bench

PAPER_ARMS = ("baseline", "activation:1")


def parse_arm(text):
    """ "baseline" -> (None, None); "<objective>:<lambda>" -> (objective, lambda)."""
    from keras_topo import objectives

    if text == "baseline":
        return None, None
    objective, _, weight = text.partition(":")
    try:
        weight = float(weight)
    except ValueError:
        weight = None
    if objective not in objectives.OBJECTIVES or weight is None or not weight >= 0:
        raise ValueError(
            f"arm {text!r}: use 'baseline' or '<objective>:<lambda>' with an objective of "
            f"{objectives.OBJECTIVES} and lambda >= 0, e.g. 'activation:1'."
        )
    return objective, weight


def sweep_commands(args):
    """`keras-topo sweep` arguments per seed and arm, in the order they run."""
    common = ["--dataset", args.dataset, "--runs-dir", args.runs_dir, "--models", "resnet18"]
    common += ["--reduction", args.reduction, "--width-multiplier", f"{args.width_multiplier:g}"]
    common += ["--data-dir", args.data_dir] if args.data_dir else []
    common += ["--epochs", str(args.epochs)] if args.epochs else []
    common += ["--precision", args.precision] if args.precision != "float32" else []
    commands = []
    for seed in args.seeds:
        for arm in args.arms:
            objective, weight = parse_arm(arm)
            chosen = ["--organisations", "baseline"]
            if objective is not None:
                chosen = ["--organisations", "grid", "--objective", objective]
                chosen += ["--lambdas", f"{weight:g}"]
            commands.append(["sweep", *common, *chosen, "--seeds", str(seed), *args.sweep_flags])
    return commands


def finished_runs(runs_dir):
    """The folders under `runs_dir` holding a complete run, sorted."""
    from keras_topo.experiments import results

    return [
        path.parent
        for path in sorted(Path(runs_dir).glob(f"*/{results.RESULT_FILE}"))
        if results.read(path.parent).get("status") == "complete"
    ]


def prune_command(runs, criterion, fractions):
    """`keras-topo prune` of the `runs` without a pruning file for `criterion`, or None."""
    from keras_topo.experiments.run_folder import RunFolder

    missing = [
        run
        for run in runs
        if not RunFolder(run).pruning_stem(criterion, "mask").with_suffix(".json").exists()
    ]
    if not missing:
        return None
    chosen = [flag for run in missing for flag in ("--run", str(run))]
    return ["prune", *chosen, "--fractions", fractions, "--criterion", criterion]


def plan(args):
    """`(commands, runs, epochs, evaluations, dataset)`: the `keras-topo` commands of the
    training, `{"plain": n, "topographic": m}` runs, their epochs (None: the paper's), the
    test-split passes pruning makes per run, and the dataset."""
    if args.study:
        from keras_topo.experiments import study

        spec = study.load_spec(args.study)
        plain = sum(variant.topography is None for variant in spec.variants)
        runs = {"plain": plain, "topographic": len(spec.variants) - plain}
        runs = {kind: count * len(spec.seeds) for kind, count in runs.items()}
        command = ["study", "--spec", args.study, "--runs-dir", args.runs_dir]
        command += ["--data-dir", args.data_dir] if args.data_dir else []
        evaluations = len(spec.methods) * len(spec.fractions)
        return [command], runs, spec.epochs, evaluations, spec.dataset
    from keras_topo.experiments import prune_sweep

    plain = sum(parse_arm(arm)[0] is None for arm in args.arms)
    runs = {"plain": plain, "topographic": len(args.arms) - plain}
    runs = {kind: count * len(args.seeds) for kind, count in runs.items()}
    evaluations = len(args.criteria) * len(prune_sweep.parse_fractions(args.fractions))
    return sweep_commands(args), runs, args.epochs, evaluations, args.dataset


def expected_seconds(bench, backend, precision, runs, epochs, evaluations):
    """Seconds on one GPU of training `runs` (`{"plain": n, "topographic": m}`) for `epochs`
    (None: the paper's) plus `evaluations` test-split passes per run, from `gpu_bench`'s rows
    of `backend` and `precision`; raises `ValueError` naming what the figures lack."""
    rows = {
        row["model"]: row
        for row in reversed(bench["rows"])  # the first row of a kind wins (fast path)
        if row["section"] == backend and row.get("precision") == precision and "step_s" in row
    }
    missing = [kind for kind in ("plain", "topographic") if kind not in rows]
    if missing or "eval_images_per_s" not in rows["topographic"]:
        kind = missing[0] if missing else "topographic eval"
        raise ValueError(f"no {kind} {backend} {precision} step in the figures")
    eval_rate = rows["topographic"]["eval_images_per_s"]
    per_run = evaluations * gpu_bench.TEST_IMAGES / eval_rate
    return sum(
        count
        * (
            gpu_bench.paper_run_seconds(
                rows[kind]["step_s"], eval_rate, bench["args"]["batch"], epochs
            )
            + per_run
        )
        for kind, count in runs.items()
    )


def print_plan(args, commands, runs, epochs, evaluations, dataset):
    """Prints the runs, the commands and, from `--bench`, the expected time on one GPU."""
    print(
        f"Plan: {dataset}, {runs['plain']} plain and {runs['topographic']} topographic "
        f"training runs, {evaluations} test-split passes of pruning per run, then the report."
    )
    for command in commands:
        print("  keras-topo " + shlex.join(command))
    if not args.bench:
        print("Expected time: unknown (give --bench runs/gpu_bench.json from benchmarks/gpu.sh).")
        return
    bench = json.loads(Path(args.bench).read_text())
    try:
        if dataset != "cifar10":
            raise ValueError(f"gpu_bench measures CIFAR-10, not {dataset}")
        total = expected_seconds(bench, args.backend, args.precision, runs, epochs, evaluations)
    except ValueError as error:
        print(f"Expected time: unknown ({error}).")
        return
    measured = bench["args"]
    note = ""
    if measured["width"] != (1.0 if args.study else args.width_multiplier) or measured["quick"]:
        note = f" (figures of width {measured['width']:g}: not this plan's scale)"
    print(
        f"Expected time on one GPU ({args.backend}, {args.precision}, {args.bench}): "
        f"{total / 3600:.1f} h{note}"
    )


def keras_topo(command):
    """Runs `keras-topo COMMAND` in its own process; exits with its status if it fails."""
    print("\n$ keras-topo " + shlex.join(command), flush=True)
    status = subprocess.run([sys.executable, "-m", "keras_topo.cli", *command]).returncode
    if status:
        raise SystemExit(status)


def parse_args(argv=None):
    """The command's arguments, checked (arms, fractions) before anything runs."""
    from keras_topo.experiments import prune_sweep

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", required=True)
    parser.add_argument("--data-dir", help="CIFAR-10 with its test split (not for digits)")
    parser.add_argument("--dataset", default="cifar10", help="digits for a CPU smoke test")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--arms", nargs="+", default=list(PAPER_ARMS), help="see the module")
    parser.add_argument("--study", help="run `keras-topo study --spec STUDY` instead (paper)")
    parser.add_argument("--reduction", default="sum", help="sum: the paper's setting")
    parser.add_argument("--width-multiplier", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, help="default: the paper's for the dataset")
    parser.add_argument("--precision", default="float32", help="passed to sweep if not float32")
    parser.add_argument("--criteria", nargs="+", default=["l2"], help="keras-topo prune's")
    parser.add_argument("--fractions", default="0:1:0.05")
    parser.add_argument("--bench", help="gpu_bench.py's JSON, for the expected time")
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    parser.add_argument("sweep_flags", nargs="*", help="after --: flags for every sweep")
    args = parser.parse_args(argv)
    try:
        prune_sweep.parse_fractions(args.fractions)
        for arm in args.arms:
            parse_arm(arm)
        if args.study:
            from keras_topo.experiments import study

            study.load_spec(args.study)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv=None):
    args = parse_args(argv)
    commands, *counts = plan(args)
    print_plan(args, commands, *counts)
    if args.dry_run:
        return
    for command in commands:
        keras_topo(command)
    if args.study:
        return  # the study prunes and reports itself
    runs = finished_runs(args.runs_dir)
    for criterion in args.criteria:
        command = prune_command(runs, criterion, args.fractions)
        if command:
            keras_topo(command)
    keras_topo(["report", args.runs_dir])
    figures = [flag for run in runs for flag in ("--run", str(run))]
    keras_topo(["figures", *figures, "--out", f"{args.runs_dir}/figures", "--max-batches", "8"])


if __name__ == "__main__":
    main()
