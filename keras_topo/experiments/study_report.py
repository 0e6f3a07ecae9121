"""`study.md` and `study.png` of a pruning study (`keras_topo.experiments.study`, which collects
its finished runs: `study.collect`).

Three tables, mean ± std over seeds (sample std; "±" omitted with one seed): test accuracy of
each variant and pruning method at each fraction; the map scores (averaged over the layers);
and what the paper's loss sees against what the map scores read (raw cosine vs Pearson,
averaged over the layers, then per layer). The figure has one panel per pruning method and one
line per variant (mean, ± one std band).
"""

from pathlib import Path

import numpy as np

MAP_SCORES = ("distance_correlation", "smoothness", "selectivity_morans_i")
SIMILARITY = (
    ("raw_cosine", "raw cosine (loss)"),
    ("mean_part", "of which channel means"),
    ("target", "loss target 1/(d+1)"),
    ("raw_cosine_distance_correlation", "raw cosine ordered by distance"),
    ("pearson", "Pearson (map scores)"),
    ("image_pearson", "per-image Pearson"),
    ("pearson_distance_correlation", "Pearson ordered by distance"),
)


def mean_std(values, digits=1):
    """`"m ± s"` over seeds (sample std), `"m"` for one value, `""` for none."""
    values = np.asarray([v for v in values if v is not None], dtype="float64")
    if values.size == 0:
        return ""
    if values.size == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def accuracy_table(spec, found):
    """Rows variant x method, columns the pruned fractions: test accuracy in %."""
    header = ["variant", "method", "seeds", *(f"{100 * f:g} %" for f in spec.fractions)]
    lines = [_row(header), "|" + "---|" * len(header)]
    for name, runs in found.items():
        for method in spec.methods:
            accuracy = [
                {p["fraction"]: 100 * p["accuracy"] for p in sweeps[method]["points"]}
                for _, sweeps, _ in runs
                if method in sweeps
            ]
            if accuracy:
                cells = [mean_std(a.get(float(f)) for a in accuracy) for f in spec.fractions]
                lines.append(_row([name, method, str(len(accuracy)), *cells]))
    return "\n".join(lines) + "\n"


def map_table(found):
    """Per variant: map scores averaged over the layers, and the layers with a class map."""
    header = ["variant", "seeds", "test acc. %", *MAP_SCORES, "layers p < 0.05"]
    lines = [_row(header), "|" + "---|" * len(header)]
    for name, runs in found.items():
        maps = [result["map_scores"] for result, _, _ in runs]
        cells = [
            mean_std((np.mean([layer[s] for layer in m.values()]) for m in maps), 3)
            if all(s in layer for m in maps for layer in m.values())
            else ""
            for s in MAP_SCORES
        ]
        p_values = [layer.get("selectivity_p_value") for m in maps for layer in m.values()]
        significant = f"{sum(p is not None and p < 0.05 for p in p_values)}/{len(p_values)}"
        accuracy = mean_std(100 * result["test"]["accuracy"] for result, _, _ in runs)
        lines.append(_row([name, str(len(runs)), accuracy, *cells, significant]))
    return "\n".join(lines) + "\n"


def similarity_tables(found):
    """Raw cosine vs Pearson: per variant (mean over layers), then per variant and layer."""
    header = ["variant", *(title for _, title in SIMILARITY)]
    overall = [_row(header), "|" + "---|" * len(header)]
    per_layer = [_row(["variant", "layer", *header[1:]]), "|" + "---|" * len(header + [""])]
    for name, runs in found.items():
        similarity = [s for _, _, s in runs if s is not None]
        if not similarity:
            continue
        cells = [
            mean_std((np.mean([layer[key] for layer in s.values()]) for s in similarity), 3)
            for key, _ in SIMILARITY
        ]
        overall.append(_row([name, *cells]))
        for layer in similarity[0]:
            cells = [mean_std((s[layer][key] for s in similarity), 3) for key, _ in SIMILARITY]
            per_layer.append(_row([name, layer, *cells]))
    return "\n".join(overall) + "\n", "\n".join(per_layer) + "\n"


def figure(spec, found, path):
    """One panel per pruning method, one line per variant (mean ± std over seeds)."""
    # matplotlib: the "experiments" extra
    from keras_topo.figures.pruning_curve import plot_pruning_panels

    panels = {}
    for name, runs in found.items():
        for method in spec.methods:
            for _, sweeps, _ in runs:
                if method in sweeps:
                    panels.setdefault(method, []).append({**sweeps[method], "variant": name})
    epochs = f"{spec.epochs} epoch{'s' * (spec.epochs > 1)}"
    title = (
        f"{spec.dataset}, {spec.model} x{spec.width_multiplier:g}, {epochs}: masks of the five "
        "topographic layers, no retraining"
    )
    return plot_pruning_panels(path, panels, label=lambda sweep: sweep["variant"], suptitle=title)


def write(spec, found, runs_dir, refused=None):
    """Writes `study.md` and `study.png` into `runs_dir`; returns `(markdown, md, png)`.

    `found`: the study's finished runs (`study.collect`); `refused`: `{method: the pruner's
    reason}` for methods it refused, listed under the table.
    """
    if not found:
        raise ValueError(f"No finished study run under {runs_dir}: run the study first.")
    overall, per_layer = similarity_tables(found)
    markdown = "\n".join(
        [
            "Test accuracy (%) after masking a fraction of each topographic layer's channels "
            "(the baseline: its architecture's topographic layers), mean ± std over seeds:",
            "",
            accuracy_table(spec, found),
            *(
                f"Method {method} refused by the pruner: {why}\n"
                for method, why in (refused or {}).items()
            ),
            "Map scores (mean over layers; 0 = no map):",
            "",
            map_table(found),
            "What the paper's loss sees (per-image cosine of raw responses) against what the "
            "map scores read (Pearson correlation), mean over pairs and layers; "
            "'ordered by distance' = minus Spearman's correlation with map distance:",
            "",
            overall,
            "Per layer:",
            "",
            per_layer,
        ]
    )
    out = Path(runs_dir)
    (out / "study.md").write_text(markdown)
    png = figure(spec, found, out / "study.png")
    return markdown, out / "study.md", png


def _row(cells):
    return "| " + " | ".join(cells) + " |"
