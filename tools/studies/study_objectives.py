"""Study (issue 13): baseline against the three topographic objectives, reduced CIFAR-10.

For each seed, trains a plain ResNet-18 and one per objective ("activation", "weights",
"spatial"; grid positions, one lambda) with the runner (`keras_topo.experiments.run.train`,
what `keras-topo train` does: resumable, `result.json` with test accuracy and the final map
scores), prunes each best checkpoint with the paper's masking (L2, no retraining) at 25/50/62 %
(`keras-topo prune`), then writes `study.md` (mean ± std over seeds) and `study.png`.

    python tools/studies/study_objectives.py --data-dir DATA --runs-dir runs/study \
        --seeds 0 1 2 --epochs 5 --train-subset 3000 --width-multiplier 0.25

`DATA` is a CIFAR-10 image folder with `train/<class>/` and `test/<class>/`. Runs are trained
seed by seed, so an interrupted study already covers every objective; run the same command
again to resume, or with `--summary-only` to redraw the table and figure. The table and
figure cover every finished run in `--runs-dir`, so a later call with other `--organisations`
or `--weights` adds rows (finished runs are not retrained).
"""

import argparse
import json
from pathlib import Path

import numpy as np

ORGANISATIONS = ("baseline", "activation", "weights", "spatial")
FRACTIONS = (0.0, 0.25, 0.5, 0.62)
SCORES = ("distance_correlation", "smoothness", "selectivity_morans_i")
PRUNING_FILE = "pruning-l2-mask.json"


def run_configs(args):
    """The study's `RunConfig`s, seed-major."""
    from keras_topo import Topography
    from keras_topo.experiments import run, sweep

    configs = []
    for seed in args.seeds:
        for organisation, weight in _grid(args.organisations, args.weights):
            config = run.RunConfig(
                dataset="cifar10",
                data_dir=args.data_dir,
                model="resnet18",
                topography=None
                if organisation == "baseline"
                else Topography("grid", objective=organisation, weight=weight),
                seed=seed,
                epochs=args.epochs,
                batch_size=args.batch_size,
                train_subset=args.train_subset,
                width_multiplier=args.width_multiplier,
                verbose=2,
            )
            config.out = str(Path(args.runs_dir) / sweep.run_name(config))
            configs.append(config)
    return configs


def _grid(organisations, weights):
    """`(organisation, lambda)` pairs; the baseline once."""
    return [
        (organisation, weight)
        for organisation in organisations
        for weight in ([1.0] if organisation == "baseline" else weights)
    ]


def train_and_prune(configs):
    import keras

    from keras_topo.experiments import prune_sweep, run

    for index, config in enumerate(configs, start=1):
        print(f"[{index}/{len(configs)}] {config.out}", flush=True)
        keras.backend.clear_session()
        run.train(config)
        if not (Path(config.out) / PRUNING_FILE).exists():
            prune_sweep.prune_sweep(config.out, list(FRACTIONS), criterion="l2", mode="mask")


def collect(runs_dir):
    """`{"<organisation> λ<lambda>": [per-run summary]}` over the finished runs in `runs_dir`."""
    from keras_topo.experiments import results

    found = {}
    for pruning in sorted(Path(runs_dir).glob(f"*/{PRUNING_FILE}")):
        result = results.read(pruning.parent)
        if result is None:
            continue
        points = json.loads(pruning.read_text())["points"]
        maps = result["map_scores"]
        label = result["organisation"]
        topography = results.run_config(result).topography
        if topography is not None:
            label += f" λ{topography.weight:g}"
        found.setdefault(label, []).append(
            {
                "accuracy": {p["fraction"]: p["accuracy"] for p in points},
                "layers": list(maps),
                **{score: [maps[layer].get(score) for layer in maps] for score in SCORES},
                "significant": [maps[layer]["selectivity_p_value"] < 0.05 for layer in maps],
            }
        )
    return found


def _mean_std(values, scale=1.0, digits=1):
    values = np.asarray(values, dtype="float64") * scale
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def _std(values):
    """Sample std over seeds (axis 0), 0 for one seed: as in the table."""
    return values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(values.shape[1:])


def table(found):
    """Markdown: accuracy (pruned too) and the map scores averaged over the layers."""
    header = (
        "| organisation | seeds | test acc. % | pruned 25 % | pruned 50 % | pruned 62 % | "
        "distance corr. | smoothness | Moran's I | layers p < 0.05 |\n|---" + "|---" * 9 + "|\n"
    )
    rows = []
    for organisation, runs in found.items():
        cells = [organisation, str(len(runs))]
        for fraction in FRACTIONS:
            cells.append(_mean_std([r["accuracy"][fraction] for r in runs], 100.0))
        for score in SCORES:
            cells.append(_mean_std([np.mean(r[score]) for r in runs], digits=3))
        significant = sum(sum(r["significant"]) for r in runs)
        cells.append(f"{significant}/{sum(len(r['significant']) for r in runs)}")
        rows.append("| " + " | ".join(cells) + " |")
    return header + "\n".join(rows) + "\n"


def figure(found, path):
    """Left: test accuracy vs pruned fraction; right: distance correlation per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for organisation, runs in found.items():
        acc = np.array([[r["accuracy"][f] for f in FRACTIONS] for r in runs]) * 100
        left.errorbar(FRACTIONS, acc.mean(0), yerr=_std(acc), capsize=3, label=organisation)
        scores = np.array([r["distance_correlation"] for r in runs])
        right.errorbar(
            np.arange(scores.shape[1]), scores.mean(0), yerr=_std(scores), capsize=3, marker="o"
        )
    right.axhline(0.0, color="grey", lw=0.8)
    left.set(xlabel="fraction of channels pruned (L2, mask)", ylabel="test accuracy (%)")
    layers = next(iter(found.values()))[0]["layers"]
    right.set_xticks(np.arange(len(layers)), layers, rotation=30, ha="right", fontsize=7)
    right.set(ylabel="distance correlation (0 = no map)")
    left.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--runs-dir", required=True)
    parser.add_argument("--organisations", nargs="+", default=list(ORGANISATIONS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--weights", nargs="+", type=float, default=[1.0], help="lambdas, reduction mean"
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-subset", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width-multiplier", type=float, default=0.25)
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    configs = run_configs(args)
    if not args.summary_only:
        train_and_prune(configs)
    found = collect(args.runs_dir)
    if not found:
        raise SystemExit("No finished run with a pruning sweep yet.")
    out = Path(args.runs_dir)
    (out / "study.md").write_text(table(found))
    figure(found, out / "study.png")
    print(table(found))
    print(f"wrote {out / 'study.md'} and {out / 'study.png'}")


if __name__ == "__main__":
    main()
