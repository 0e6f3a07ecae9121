"""The `keras-topo` command line on a tiny digits run: train, report, prune, figures, demo."""

import json

import pytest
import tiny_architecture

from keras_topo import Topography, cli
from keras_topo.experiments import results, run

TINY = [
    "--dataset",
    "digits",
    "--epochs",
    "1",
    "--batch-size",
    "32",
    "--train-subset",
    "32",
    "--verbose",
    "0",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained through the CLI (the test architecture "tiny", not ResNet-18)."""
    with tiny_architecture.registered():
        runs = tmp_path_factory.mktemp("runs")
        out = runs / "grid"
        argv = ["train", *TINY, "--model", "tiny", "--topography", "grid", "--lambda", "2"]
        assert cli.main([*argv, "--out", str(out)]) == 0
        yield runs, out


def test_train_records_the_flags(trained, capsys):
    _, out = trained
    result = results.read(out)
    assert result["status"] == "complete"
    config = run.RunConfig.from_dict(result["config"])
    assert config.topography == Topography("grid", weight=2.0) and config.train_subset == 32
    assert config.weight_decay_mode == "coupled" and config.learning_rate == 0.01
    assert config.distribute == "none" and config.model == "tiny"
    assert config.precision == "float32" == result["fast_path"]["precision"]
    # Running the same command again prints the finished run without training.
    argv = ["train", *TINY, "--model", "tiny", "--topography", "grid"]
    cli.main([*argv, "--lambda", "2", "--out", str(out)])
    assert "grid-2d, best epoch 0" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # ... but not under other settings
        cli.main([*argv, "--reduction", "sum", "--out", str(out)])
    assert "(topography.reduction, topography.weight differ)" in capsys.readouterr().err


def test_precision_flag_reaches_the_run_config():
    args = cli._parser().parse_args(["train", *TINY, "--precision", "mixed_float16", "--out", "x"])
    assert cli._run_config(args, "x").precision == "mixed_float16"


def test_topographic_flags_make_one_topography():
    """`train` flags map onto the fields of one `Topography`; a sweep's flags make the
    template of its organisations; `train` without --topography is the baseline."""
    flags = ["--reduction", "sum", "--distance", "l1", "--nested-factor", "0.25"]
    args = cli._parser().parse_args(
        ["train", *TINY, "--topography", "nested", "--dimension", "3", "--lambda", "0.5", *flags]
        + ["--out", "x"]
    )
    assert cli._run_config(args, "x").topography == Topography(
        "nested", dimension=3, weight=0.5, reduction="sum", distance="l1", nested_factor=0.25
    )
    baseline = cli._parser().parse_args(["train", *TINY, *flags, "--out", "x"])
    assert cli._run_config(baseline, "x").topography is None
    sweep = cli._parser().parse_args(["sweep", *TINY, *flags, "--runs-dir", "r"])
    assert cli._run_config(sweep, "r").topography == Topography(
        reduction="sum", distance="l1", nested_factor=0.25
    )
    with pytest.raises(SystemExit):
        cli.main(["train", *TINY, "--precision", "float16", "--out", "x"])


def test_report_prune_and_figures(trained, capsys, tmp_path):
    runs, out = trained
    assert cli.main(["report", str(runs), "--out", str(tmp_path)]) == 0
    assert "| grid-2d |" in capsys.readouterr().out and (tmp_path / "results.csv").exists()

    assert cli.main(["prune", "--run", str(out), "--fractions", "0,0.5"]) == 0
    printed = capsys.readouterr().out
    sweep = json.loads((out / "pruning-l2-mask.json").read_text())
    assert [p["fraction"] for p in sweep["points"]] == [0.0, 0.5]
    assert f"{100 * sweep['points'][1]['accuracy']:6.2f}%" in printed
    assert sweep["points"][0]["accuracy"] == pytest.approx(results.read(out)["test"]["accuracy"])

    figures = tmp_path / "figures"
    assert (
        cli.main(["figures", "--run", str(out), "--out", str(figures), "--max-batches", "2"]) == 0
    )
    names = {p.name for p in figures.iterdir()}
    assert names == {
        "positions.png",
        "topography-conv2.png",
        "pruning-l2-mask.png",
        "maps-selectivity.png",
        "maps-similarity.png",
    }


def test_bad_input_exits_with_a_message(trained, capsys):
    _, out = trained
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["prune", "--run", str(out), "--fractions", "0:2:0.5"])
    assert exit_info.value.code == 2
    assert "fractions" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--dataset", "mnist", "--out", "x"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["sweep", *TINY, "--runs-dir", "x", "--organisations", "hexagon"])
    assert "hexagon" in capsys.readouterr().err


@pytest.mark.tf_only
def test_demo_writes_table_figures_and_a_pruned_savedmodel(tmp_path):
    import numpy as np
    import tensorflow as tf

    from keras_topo import demo
    from keras_topo.experiments import digits

    lines = []
    outcome = demo.run_demo(
        tmp_path, epochs=1, fractions=(0.0, 0.5), train_subset=64, log=lines.append
    )
    paths = outcome["paths"]
    assert [row["fraction"] for row in outcome["table"]] == [0.0, 0.5]
    assert set(outcome["table"][0]) == {"fraction", "baseline", "grid-2d"}
    assert any("| 50% |" in line for line in lines)
    assert len(paths["figures"]) == 3
    import keras

    pruned = keras.saving.load_model(paths["pruned_keras"])
    images = digits.arrays("test")[0][:8]
    loaded = tf.saved_model.load(paths["pruned_savedmodel"])  # keep it referenced
    served = loaded.serve(images)
    np.testing.assert_allclose(served, pruned.predict(images, verbose=0), atol=1e-4)
