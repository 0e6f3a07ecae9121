"""`RunConfig` (one `Topography`), its one label, keras-topo 0.3.0's run folders, `RunFolder`,
and a baseline scored at its architecture's topographic layers without a twin model."""

import json

import numpy as np
import pytest
import tiny_architecture

from keras_topo import Topography, applications
from keras_topo.experiments import report, results, run, study, sweep

# The config.json of two run folders written by keras-topo 0.3.0 (the CIFAR study's).
STUDY_0_3_0 = {
    "dataset": "cifar10",
    "model": "resnet18",
    "topography": None,
    "dimension": None,
    "topographic_weight": 1.0,
    "reduction": "mean",
    "distance": "euclidean",
    "nested_factor": 0.5,
    "objective": "activation",
    "shrink_factor": 3.0,
    "seed": 0,
    "data_dir": "/data/cifar10",
    "out": "runs/study/baseline-seed0",
    "epochs": 15,
    "batch_size": 128,
    "learning_rate": 0.01,
    "momentum": 0.9,
    "weight_decay": 0.01,
    "weight_decay_mode": "coupled",
    "warmup_fraction": 0.3,
    "train_subset": None,
    "width_multiplier": 0.25,
    "jit_compile": "default",
    "distribute": "none",
    "verbose": 2,
}
BASELINE_0_3_0 = STUDY_0_3_0
PAPER_0_3_0 = {
    **STUDY_0_3_0,
    "topography": "grid",
    "reduction": "sum",
    "out": "runs/study/paper-lam1-sum-seed0",
}


def test_a_0_3_0_config_loads_with_its_settings():
    baseline = run.RunConfig.from_dict(BASELINE_0_3_0)
    assert baseline.topography is None and baseline.organisation == "baseline"
    assert (baseline.dataset, baseline.epochs, baseline.width_multiplier) == ("cifar10", 15, 0.25)
    assert baseline.precision == "float32"  # a field 0.3.0 did not write takes its default
    paper = run.RunConfig.from_dict(PAPER_0_3_0)
    assert paper.topography == Topography("grid", weight=1.0, reduction="sum")
    assert paper.organisation == "grid-2d" and paper.batch_size == 128
    # The new format holds the whole Topography and reads back equal.
    saved = json.loads(json.dumps(paper.to_dict()))
    assert saved["topography"]["reduction"] == "sum" and "topographic_weight" not in saved
    assert run.RunConfig.from_dict(saved) == paper


def test_a_0_3_0_run_folder_resumes_under_this_version(tmp_path):
    """The study's folders, written by 0.3.0, are the same runs for this version's study
    (nothing retrained), and another lambda is still refused, naming the field."""
    spec = study.load_spec("cifar10")
    configs = {config.out: config for _, config in study.run_configs(spec, "runs/study")}
    for old in (BASELINE_0_3_0, PAPER_0_3_0):
        folder = run.RunFolder(tmp_path / old["out"])
        folder.path.mkdir(parents=True)
        folder.config_path.write_text(json.dumps(old))
        current = configs[old["out"]]
        folder.write_config(current)
        assert folder.read_config() == current
    stronger = configs["runs/study/paper-lam10-sum-seed0"]
    with pytest.raises(ValueError, match=r"\(topography.weight differ\)"):
        run.RunFolder(tmp_path / PAPER_0_3_0["out"]).write_config(stronger)


def test_a_0_3_0_result_is_reported_with_its_lambda(tmp_path):
    for old, accuracy in ((BASELINE_0_3_0, 0.8), (PAPER_0_3_0, 0.7)):
        result = {
            "status": "complete",
            "config": old,
            "organisation": "baseline" if old["topography"] is None else "grid-2d",
            "best_val_accuracy": accuracy,
            "test": {"accuracy": accuracy},
        }
        results.write(tmp_path, result)
        assert results.run_config(results.read(tmp_path)) == run.RunConfig.from_dict(old)
        (row,) = report.summarise([result])
        assert row["lambda"] == (None if old["topography"] is None else 1.0)


def test_flat_keywords_are_deprecated_but_work():
    expected = Topography("nested", dimension=3, weight=0.5, reduction="sum")
    with pytest.warns(DeprecationWarning, match="topographic_weight="):
        config = run.RunConfig(
            topography="nested", dimension=3, topographic_weight=0.5, reduction="sum"
        )
    assert config == run.RunConfig(topography=expected)
    with pytest.warns(DeprecationWarning, match="config.topography.weight"):
        assert config.topographic_weight == 0.5
    with pytest.warns(DeprecationWarning):
        assert run.RunConfig().reduction == Topography().reduction  # a baseline's: defaults
    with pytest.raises(AttributeError, match="lambda_"):
        run.RunConfig().lambda_  # noqa: B018


@pytest.mark.parametrize(
    "values, message",
    [
        ({"lambda": 1.0}, r"unknown run settings \['lambda'\]"),
        ({"topography": {"scheme": "grid"}, "reduction": "sum"}, "keep one of the two"),
        ({"topography": "grid", "topographic_weight": -1.0}, r"weight \(lambda\)"),
        ({"topography": {"scheme": "hexagon"}}, "hexagon"),
        ({"model": "resnet19"}, "model must be one of"),
    ],
)
def test_bad_settings_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        run.RunConfig.from_dict(values)


@pytest.mark.parametrize(
    "topography, label",
    [
        (None, "baseline"),
        (Topography(), "grid-2d"),
        (Topography("grid", dimension=3), "grid-3d"),
        (Topography("nested", dimension=3, weight=0.1), "nested-3d"),
        (Topography("line"), "line-1d"),
        (Topography("grid", objective="spatial"), "grid-2d-spatial"),
        (Topography(np.zeros((4, 2))), "explicit-4x2"),
    ],
)
def test_one_label_for_an_organisation(topography, label):
    config = run.RunConfig(topography=topography, seed=3)
    assert config.organisation == label
    lam = "" if topography is None else f"-lam{topography.weight:g}"
    assert sweep.run_name(config) == f"digits-resnet18-{label}{lam}-seed3"
    if topography is not None:
        assert topography.describe().startswith(label + ", lambda")


def test_an_organisation_name_parses_to_a_topography_keeping_the_template():
    template = Topography(reduction="sum", distance="l1")
    assert sweep.parse_organisation("baseline", template) is None
    parsed = sweep.parse_organisation("nested-3d", template)
    assert parsed == Topography("nested", dimension=3, reduction="sum", distance="l1")
    assert run.RunConfig(topography=parsed).organisation == "nested-3d"


def _write_log(path, rows):
    path.write_text("epoch,val_accuracy,loss\n" + "".join(f"{r}\n" for r in rows))


def test_run_folder_layout_and_files(tmp_path):
    folder = run.RunFolder(tmp_path / "r")
    assert folder.best_model_path == tmp_path / "r" / "best.keras"
    assert (folder.config_path.name, folder.result_path.name) == ("config.json", "result.json")
    assert (folder.log_path.name, folder.backup_dir.name) == ("log.csv", "backup")
    with pytest.raises(ValueError, match="not a run folder"):
        folder.read_config()
    folder.path.mkdir()
    with pytest.raises(ValueError, match="has no best.keras: train the run first"):
        folder.load_best_model()
    assert folder.read_log() == [] and folder.best_logged() is None
    # A re-run epoch (after a resume) keeps its last row.
    _write_log(folder.log_path, ["0,0.5,2.0", "1,0.25,1.5", "1,0.75,1.0"])
    assert folder.read_log() == [
        {"epoch": 0, "val_accuracy": 0.5, "loss": 2.0},
        {"epoch": 1, "val_accuracy": 0.75, "loss": 1.0},
    ]
    assert folder.best_logged("val_accuracy") == 0.75 and folder.best_logged("loss") == 2.0
    assert not folder.is_complete()
    folder.write_result({"status": "complete", "value": np.float32(0.5)})
    assert folder.is_complete() and folder.read_result()["value"] == 0.5
    assert not list(folder.path.glob("*.tmp"))
    for stem in ("pruning-l2-mask", "pruning-l1-remove-finetune2"):
        (folder.path / f"{stem}.json").write_text("{}")
    assert [p.name for p in folder.pruning_sweeps()] == [
        "pruning-l1-remove-finetune2.json",
        "pruning-l2-mask.json",
    ]
    assert folder.pruning_stem("l1", "remove", 2).name == "pruning-l1-remove-finetune2"


def test_a_baseline_is_scored_at_its_architectures_layers_without_a_twin():
    """A baseline's default layers come from the architecture data; its scored copy carries
    the baseline's weights at the positions `topographic_layer_specs` gives."""
    with tiny_architecture.registered():
        baseline = run.RunConfig(model="tiny")
        model = run.build_model(baseline, (8, 8, 1), 3)
        (spec,) = applications.topographic_layer_specs("tiny")
        assert run.topographic_layer_names(model, baseline) == [spec.name] == ["conv2"]
        scored = run.scored_model(model, baseline)
        layer = scored.get_layer("conv2")
        np.testing.assert_array_equal(layer.positions, spec.positions)
        for old, new in zip(model.get_weights(), scored.get_weights(), strict=True):
            np.testing.assert_array_equal(old, new)
        topographic = run.RunConfig(model="tiny", topography="grid")
        model = run.build_model(topographic, (8, 8, 1), 3)
        assert run.scored_model(model, topographic) is model
        assert run.topographic_layer_names(model, topographic) == ["conv2"]
