"""`keras-topo study`: specs, the report's tables, and the smoke study end to end (resumable)."""

import dataclasses
import json

import numpy as np
import pytest

from keras_topo import Topography, cli, pruning
from keras_topo.experiments import run, study, study_report
from keras_topo.metrics import similarity_ordering


def test_built_in_specs_and_their_runs():
    spec = study.load_spec("cifar10")
    assert spec.dataset == "cifar10" and spec.width_multiplier >= 0.25 and len(spec.seeds) == 2
    assert spec.fractions[0] == 0.0 and spec.fractions[-1] == 0.8
    configs = study.run_configs(spec, "R", "D")
    assert len(configs) == 2 * len(spec.variants)
    by_name = {c.out: c for _, c in configs}
    paper = by_name["R/paper-lam1-sum-seed1"]
    assert paper.topography == Topography("grid", weight=1.0, reduction="sum")
    assert by_name["R/paper-lam10-sum-seed0"].topography.weight == 10.0
    assert by_name["R/tdann-spatial-lam1-seed0"].topography.objective == "spatial"
    assert by_name["R/topoloss-lam1-seed0"].organisation == "grid-2d-weights"
    assert by_name["R/baseline-seed0"].topography is None
    assert {c.epochs for c in by_name.values()} == {spec.epochs}


def test_spec_file_starts_from_a_built_in(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(
        json.dumps(
            {
                "base": "smoke",
                "seeds": [3],
                "methods": ["l1"],
                "variants": [{"name": "strong", "topography": "grid", "weight": 5}],
            }
        )
    )
    spec = study.load_spec(str(path))
    assert spec.dataset == "digits" and spec.seeds == (3,) and spec.methods == ("l1",)
    assert spec.variants == (study.Variant("strong", "grid", "activation", 5.0),)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"base": "smoke", "epoch": 3}, "unknown fields"),
        ({"base": "smoke", "methods": ["l3"]}, "methods"),
        ({"base": "smoke", "fractions": [0.5, 1.0]}, "fractions"),
        ({"base": "huge"}, "base"),
        ({"base": "smoke", "variants": [{"name": "a"}, {"name": "a"}]}, "own name"),
        ({"base": "smoke", "variants": [{"title": "a"}]}, "Variant"),
    ],
)
def test_bad_spec_files(tmp_path, fields, message):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(fields))
    with pytest.raises(ValueError, match=message):
        study.load_spec(str(path))
    with pytest.raises(ValueError, match="built-in"):
        study.load_spec(str(tmp_path / "missing.json"))


def test_a_variant_its_layers_refuse_stops_the_study_before_any_run(tmp_path):
    spec = dataclasses.replace(
        study.SPECS["smoke"],
        width_multiplier=0.125,  # 8 stem channels: a 2x4 sheet, too small for shrink factor 3
        variants=(study.Variant("topoloss", "grid", "weights"),),
    )
    with pytest.raises(ValueError, match="variant 'topoloss'.*shrink_factor"):
        study.run_study(spec, tmp_path / "runs")
    assert not list(tmp_path.rglob("*.json"))  # nothing trained or written


def fake_run(seed, accuracy, raw_cosine):
    maps = {"stem_conv": {"distance_correlation": 0.1, "smoothness": 0.2}}
    maps["stem_conv"].update(selectivity_morans_i=0.0, selectivity_p_value=0.01)
    sweeps = {
        "l2": {
            "points": [{"fraction": 0.0, "accuracy": accuracy}, {"fraction": 0.5, "accuracy": 0.1}]
        }
    }
    keys = [key for key, _ in study_report.SIMILARITY]
    similarity = {"stem_conv": {key: raw_cosine for key in keys}}
    return {"test": {"accuracy": accuracy}, "map_scores": maps}, sweeps, similarity


def test_report_tables_are_mean_and_sample_std_over_seeds():
    spec = dataclasses.replace(study.SPECS["smoke"], methods=("l2", "l1"), fractions=(0.0, 0.5))
    found = {"baseline": [fake_run(0, 0.9, 0.5), fake_run(1, 0.7, 0.7)]}
    table = study_report.accuracy_table(spec, found).splitlines()
    assert table[0] == "| variant | method | seeds | 0 % | 50 % |"
    assert (
        table[2]
        == f"| baseline | l2 | 2 | 80.0 ± {100 * np.std([0.9, 0.7], ddof=1):.1f} | 10.0 ± 0.0 |"
    )
    assert len(table) == 3  # no l1 sweep: no row
    maps = study_report.map_table(found).splitlines()[2]
    assert maps.startswith("| baseline | 2 | 80.0 ± 14.1 | 0.100 ± 0.000 |") and "2/2" in maps
    overall, per_layer = study_report.similarity_tables(found)
    assert overall.splitlines()[2].startswith("| baseline | 0.600 ± 0.141 |")
    assert per_layer.splitlines()[2].startswith("| baseline | stem_conv | 0.600 ± 0.141 |")


@pytest.mark.slow
def test_smoke_study_end_to_end_and_resumable(tmp_path, monkeypatch, capsys):
    """A reduced smoke spec through the command; a second call retrains and prunes nothing;
    a removed result retrains that run only; a removed point is recomputed alone."""
    spec = dataclasses.replace(
        study.SPECS["smoke"],
        epochs=1,
        train_subset=128,
        seeds=(0,),
        variants=study.VARIANTS[:2],
        methods=("l2", "redundancy"),
        fractions=(0.0, 0.5),
        calibration_size=64,
    )
    monkeypatch.setitem(study.SPECS, "tiny", spec)
    runs = tmp_path / "runs"
    assert cli.main(["study", "--spec", "tiny", "--runs-dir", str(runs)]) == 0
    markdown = (runs / "study.md").read_text()
    assert markdown in capsys.readouterr().out and (runs / "study.png").stat().st_size > 0
    for variant in ("baseline", "paper-lam1-sum"):
        result = json.loads((runs / f"{variant}-seed0" / "result.json").read_text())
        unpruned = 100 * result["test"]["accuracy"]
        for method in ("l2", "redundancy"):
            assert f"| {variant} | {method} | 1 | {unpruned:.1f} |" in markdown
        similarity = json.loads((runs / f"{variant}-seed0" / "similarity.json").read_text())
        assert list(similarity["layers"]) == list(result["map_scores"])
    assert "| paper-lam1-sum |" in markdown.split("What the paper's loss sees")[1]

    calls = {"train": 0, "prune": 0, "similarity": 0}
    for module, name, key in (
        (run, "train", "train"),
        (pruning, "prune_channels", "prune"),
        (similarity_ordering, "measure_similarity_ordering", "similarity"),
    ):
        real = getattr(module, name)

        def counted(*args, _real=real, _key=key, **kwargs):
            calls[_key] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    assert cli.main(["study", "--spec", "tiny", "--runs-dir", str(runs)]) == 0
    assert calls == {"train": 0, "prune": 0, "similarity": 0}
    assert (runs / "study.md").read_text() == markdown

    # Killed mid-sweep: the last point of one sweep lost; killed mid-run: a result lost.
    stored = runs / "baseline-seed0" / "pruning-redundancy-mask.json"
    sweep = json.loads(stored.read_text())
    stored.write_text(json.dumps({**sweep, "points": sweep["points"][:1]}))
    (runs / "paper-lam1-sum-seed0" / "result.json").unlink()
    assert cli.main(["study", "--spec", "tiny", "--runs-dir", str(runs)]) == 0
    assert calls["train"] == 1 and calls["prune"] >= 1
    assert json.loads(stored.read_text())["points"] == sweep["points"]
