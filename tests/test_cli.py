"""The `keras-topo` command line on a tiny digits run: train, report, prune, figures, demo."""

import json

import pytest

from keras_topo import cli
from keras_topo.experiments import results

TINY = [
    "--dataset",
    "digits",
    "--epochs",
    "1",
    "--batch-size",
    "32",
    "--train-subset",
    "32",
    "--width-multiplier",
    "0.125",
    "--verbose",
    "0",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained through the CLI (with a small stand-in for ResNet-18)."""
    from test_experiments_run import small_model

    from keras_topo.experiments import run

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run, "build_model", small_model)
        yield _train(tmp_path_factory)


def _train(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    out = runs / "grid"
    assert (
        cli.main(["train", *TINY, "--topography", "grid", "--lambda", "2", "--out", str(out)]) == 0
    )
    return runs, out


def test_train_records_the_flags(trained, capsys):
    _, out = trained
    result = results.read(out)
    assert result["status"] == "complete"
    config = result["config"]
    assert (config["topography"], config["topographic_weight"], config["train_subset"]) == (
        "grid",
        2.0,
        32,
    )
    assert config["weight_decay_mode"] == "coupled" and config["learning_rate"] == 0.01
    assert config["distribute"] == "none" and config["reduction"] == "mean"
    assert config["precision"] == "float32" == result["fast_path"]["precision"]
    # Running the same command again prints the finished run without training.
    cli.main(["train", *TINY, "--topography", "grid", "--lambda", "2", "--out", str(out)])
    assert "grid-2d, best epoch 0" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # ... but not under other settings
        cli.main(["train", *TINY, "--topography", "grid", "--out", str(out)])
    assert "topographic_weight" in capsys.readouterr().err


def test_precision_flag_reaches_the_run_config():
    args = cli._parser().parse_args(["train", *TINY, "--precision", "mixed_float16", "--out", "x"])
    assert cli._run_config(args, "x").precision == "mixed_float16"
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
