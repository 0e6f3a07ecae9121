"""Sweep grids and the paper-format tables, on hand-written result files."""

import csv
import io

import numpy as np
import pytest

from keras_topo import Topography
from keras_topo.experiments import report, results, run, sweep


def fake_result(folder, topography, weight, seed, val, test, dataset="cifar10", auc=None):
    config = run.RunConfig(
        dataset=dataset,
        topography=None if topography is None else Topography(topography, weight=weight),
        seed=seed,
        out=str(folder),
    )
    metrics = {"accuracy": test, "loss": 1.0}
    if auc is not None:
        metrics["roc_auc"] = auc
    result = results.make(
        config=config,
        epochs=[{"epoch": 0, "val_accuracy": val}],
        test=metrics,
        topographic_layers=[],
        params=1,
        jit_compile=False,
        wall_time_s=1.0,
    )
    folder.mkdir(parents=True)
    results.write(folder, result)


@pytest.fixture
def runs(tmp_path):
    table = [  # topography, lambda, seed, val, test
        (None, 1.0, 0, 0.90, 0.91),
        (None, 1.0, 1, 0.92, 0.93),
        ("grid", 0.5, 0, 0.80, 0.99),
        ("grid", 0.5, 1, 0.82, 0.99),  # worse on validation
        ("grid", 1.0, 0, 0.91, 0.90),
        ("grid", 1.0, 1, 0.93, 0.94),
    ]
    for i, (topography, weight, seed, val, test) in enumerate(table):
        fake_result(tmp_path / f"r{i}", topography, weight, seed, val, test)
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.json").write_text("{}")
    return tmp_path


def test_lambda_is_chosen_on_validation_and_test_is_mean_and_std_over_seeds(runs):
    rows = report.summarise(report.collect(runs))
    assert [r["organisation"] for r in rows] == ["baseline", "grid-2d"]
    baseline, grid = rows
    assert baseline["lambda"] is None and baseline["seeds"] == 2
    assert baseline["test_accuracy_mean"] == pytest.approx(0.92)
    assert baseline["test_accuracy_std"] == pytest.approx(np.std([0.91, 0.93], ddof=1))
    assert grid["lambda"] == 1.0 and grid["lambdas_tried"] == "0.5 1"
    assert grid["test_accuracy_mean"] == pytest.approx(0.92)
    assert grid["val_accuracy_mean"] == pytest.approx(0.92)


def test_markdown_and_csv_tables(runs):
    markdown, md_path, csv_path = report.write(runs)
    lines = markdown.strip().splitlines()
    assert lines[0] == "| organisation | cifar10 resnet18 |"
    assert lines[2] == "| baseline | 92.00 ± 1.41 |"
    assert lines[3] == "| grid-2d | 92.00 ± 2.83 (λ=1) |"
    assert md_path.read_text() == markdown
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert [r["organisation"] for r in rows] == ["baseline", "grid-2d"]
    assert float(rows[1]["test_accuracy_std"]) == pytest.approx(np.std([0.90, 0.94], ddof=1))


def test_auc_column_and_single_seed(tmp_path):
    fake_result(tmp_path / "b", None, 1.0, 0, 0.7, 0.75, dataset="birddcase", auc=0.8)
    markdown, _, _ = report.write(tmp_path)
    assert "| baseline | 75.00, AUC 0.800 |" in markdown


def test_report_without_runs_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="No complete run"):
        report.write(tmp_path)


def test_grid_names_one_baseline_per_seed_and_every_lambda_for_schemes(tmp_path):
    base = run.RunConfig(dataset="digits", epochs=1, topography=Topography(reduction="sum"))
    configs = sweep.grid(
        base, tmp_path, ["resnet18"], ["baseline", "grid", "nested-3d"], [0.5, 1], [0, 1]
    )
    names = [run.Path(c.out).name for c in configs]
    assert len(configs) == 2 + 2 * 2 * 2
    assert names[:2] == ["digits-resnet18-baseline-seed0", "digits-resnet18-baseline-seed1"]
    assert "digits-resnet18-nested-3d-lam0.5-seed1" in names
    nested = [c for c in configs if c.topography is not None and c.topography.scheme == "nested"]
    assert {c.topography.dimension for c in nested} == {3} and {c.epochs for c in configs} == {1}
    # The organisations keep the base's other settings; each folder is named by its data.
    assert {c.topography.reduction for c in configs if c.topography} == {"sum"}
    assert {c.topography.weight for c in nested} == {0.5, 1.0}
    assert names == [sweep.run_name(c) for c in configs]


@pytest.mark.parametrize("text", ["grid-4d", "hexagon", "circle-3d", "grid-xd"])
def test_bad_organisation(text):
    with pytest.raises(ValueError, match="rganisation"):
        sweep.parse_organisation(text)


def test_run_sweep_skips_complete_runs(tmp_path, monkeypatch):
    base = run.RunConfig(dataset="digits", epochs=1)
    configs = sweep.grid(base, tmp_path, ["resnet18"], ["baseline"], [1.0], [0])
    fake_result(run.Path(configs[0].out), None, 1.0, 0, 0.5, 0.5)
    monkeypatch.setattr(run, "train", lambda *a, **k: pytest.fail("must not retrain"))
    logged = []
    done = sweep.run_sweep(configs, log=logged.append)
    assert done[0]["status"] == "complete" and "complete, skipped" in logged[0]


def test_run_sweep_reports_a_diverged_run_and_goes_on(tmp_path, monkeypatch):
    from keras_topo.experiments.divergence import TrainingDiverged

    base = run.RunConfig(dataset="digits", epochs=1)
    configs = sweep.grid(base, tmp_path, ["resnet18"], ["baseline"], [1.0], [0, 1])

    def train(config):
        if config.seed == 0:
            raise TrainingDiverged("epoch 1: loss is nan")
        return {"status": "complete", "test": {"accuracy": 0.5}}

    monkeypatch.setattr(run, "train", train)
    logged = []
    done = sweep.run_sweep(configs, log=logged.append)
    assert [result["test"]["accuracy"] for result in done] == [0.5]
    assert "diverged" in logged[1] and configs[0].out in logged[-1]
