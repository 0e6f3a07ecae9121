"""Result tables in the paper's format, from the `result.json` files under a folder.

Per dataset and model, one row per organisation plus the baseline: for each organisation the
lambda with the best mean validation accuracy (best checkpoint of each seed) is chosen, and
the test accuracy of that lambda is reported as mean ± std over its seeds (sample std,
ddof=1; "±" is omitted with a single seed). BirdDCASE rows add ROC AUC.

A second table gives the map scores of the same runs (`result.json`'s `map_scores`, see
`keras_topo.metrics`), each averaged over the topographic layers, then over the seeds.
"""

import csv
import io
from pathlib import Path

import numpy as np

from keras_topo.experiments import results

MAP_SCORES = ("distance_correlation", "smoothness", "selectivity_morans_i")
ORDER = ("baseline", "grid-2d", "grid-3d", "nested-2d", "nested-3d", "circle-2d", "sphere-3d")
FIELDS = (
    "dataset",
    "model",
    "organisation",
    "lambda",
    "lambdas_tried",
    "seeds",
    "val_accuracy_mean",
    "test_accuracy_mean",
    "test_accuracy_std",
    "test_roc_auc_mean",
    "test_roc_auc_std",
    *(f"{score}_mean" for score in MAP_SCORES),
)


def collect(runs_dir):
    """The complete results found anywhere under `runs_dir`, sorted by path."""
    found = []
    for path in sorted(Path(runs_dir).rglob(results.RESULT_FILE)):
        result = results.read(path.parent)
        if result.get("status") == "complete":
            found.append(result)
    return found


def summarise(found):
    """One row (dict with `FIELDS`) per dataset, model and organisation."""
    groups = {}
    for result in found:
        config = results.run_config(result)  # either config format (0.3.0's flat one too)
        weight = None if config.topography is None else config.topography.weight
        key = (config.dataset, config.model, result["organisation"])
        groups.setdefault(key, {}).setdefault(weight, []).append(result)
    rows = []
    for (dataset, model, organisation), by_weight in groups.items():
        weight, chosen = max(
            by_weight.items(), key=lambda item: _mean(r["best_val_accuracy"] for r in item[1])
        )
        accuracy = [r["test"]["accuracy"] for r in chosen]
        auc = [r["test"]["roc_auc"] for r in chosen if "roc_auc" in r["test"]]
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "organisation": organisation,
                "lambda": weight,
                "lambdas_tried": " ".join(f"{w:g}" for w in sorted(by_weight) if w is not None),
                "seeds": len(chosen),
                "val_accuracy_mean": _mean(r["best_val_accuracy"] for r in chosen),
                "test_accuracy_mean": _mean(accuracy),
                "test_accuracy_std": _std(accuracy),
                "test_roc_auc_mean": _mean(auc) if auc else None,
                "test_roc_auc_std": _std(auc) if auc else None,
                **{f"{score}_mean": _map_mean(chosen, score) for score in MAP_SCORES},
            }
        )
    return sorted(rows, key=lambda r: (r["dataset"], r["model"], _rank(r["organisation"])))


def to_csv(rows):
    """The rows as CSV text (one line per row, `FIELDS` as header)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_markdown(rows):
    """A Markdown table: organisations as rows, one column per dataset/model, test accuracy
    in % as `mean ± std (λ=...)`; a row's cell is empty where it has no run."""
    columns = sorted({(r["dataset"], r["model"]) for r in rows})
    organisations = sorted({r["organisation"] for r in rows}, key=_rank)
    cells = {(r["organisation"], r["dataset"], r["model"]): _cell(r) for r in rows}
    header = ["organisation"] + [f"{dataset} {model}" for dataset, model in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for organisation in organisations:
        values = [cells.get((organisation, *column), "") for column in columns]
        lines.append("| " + " | ".join([organisation, *values]) + " |")
    mapped = [r for r in rows if any(r[f"{score}_mean"] is not None for score in MAP_SCORES)]
    if mapped:
        header = ["dataset", "model", "organisation", *MAP_SCORES]
        lines += ["", "Map scores (mean over layers and seeds; 0 = no map):", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in mapped:
            scores = [_format_score(r[f"{score}_mean"]) for score in MAP_SCORES]
            lines.append(
                "| " + " | ".join([r["dataset"], r["model"], r["organisation"], *scores]) + " |"
            )
    return "\n".join(lines) + "\n"


def write(runs_dir, out_dir=None):
    """Writes `results.md` and `results.csv` into `out_dir` (default `runs_dir`); returns the
    Markdown text and the two paths."""
    rows = summarise(collect(runs_dir))
    if not rows:
        raise ValueError(f"No complete run (result.json) under {runs_dir}.")
    out_dir = Path(out_dir or runs_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(rows)
    (out_dir / "results.md").write_text(markdown)
    (out_dir / "results.csv").write_text(to_csv(rows))
    return markdown, out_dir / "results.md", out_dir / "results.csv"


def _cell(row):
    text = f"{100 * row['test_accuracy_mean']:.2f}"
    if row["seeds"] > 1:
        text += f" ± {100 * row['test_accuracy_std']:.2f}"
    if row["test_roc_auc_mean"] is not None:
        text += f", AUC {row['test_roc_auc_mean']:.3f}"
    if row["lambda"] is not None:
        text += f" (λ={row['lambda']:g})"
    return text


def _map_mean(runs, score):
    """`score` averaged over each run's layers, then over runs; None if no run has it."""
    per_run = [
        np.mean([layer[score] for layer in r["map_scores"].values()])
        for r in runs
        if r.get("map_scores") and all(score in layer for layer in r["map_scores"].values())
    ]
    return float(np.mean(per_run)) if per_run else None


def _format_score(value):
    return "" if value is None else f"{value:.3f}"


def _rank(organisation):
    return (ORDER.index(organisation), "") if organisation in ORDER else (len(ORDER), organisation)


def _mean(values):
    return float(np.mean(list(values)))


def _std(values):
    values = list(values)
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
