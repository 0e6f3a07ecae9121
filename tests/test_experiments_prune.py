"""`prune_sweep` on run folders made by hand (an untrained small ResNet-18 on digits)."""

import json

import keras
import numpy as np
import pytest

from keras_topo import applications
from keras_topo.experiments import digits, prune_sweep, results, run


def make_run(folder, topography):
    """A run folder as `run.train` leaves it, with an untrained model as `best.keras`.

    One batch holds the whole test split (270), so that each model compiles once.
    """
    config = run.RunConfig(
        dataset="digits",
        topography=topography,
        epochs=1,
        batch_size=300,
        width_multiplier=0.125,
        out=str(folder),
    )
    run_folder = run.RunFolder(folder)
    folder.mkdir(parents=True)
    model = run.build_model(config, digits.INPUT_SHAPE, digits.NUM_CLASSES)
    model.save(run_folder.best_model_path)
    run_folder.write_config(config)
    return config, model


def accuracy(model):
    images, labels = digits.arrays("test")
    logits = keras.ops.convert_to_numpy(model.predict(images, batch_size=300, verbose=0))
    return float(np.mean(np.argmax(logits, -1) == labels))


def test_parse_fractions():
    assert prune_sweep.parse_fractions("0:1:0.25") == [0.0, 0.25, 0.5, 0.75]
    assert len(prune_sweep.parse_fractions("0:1:0.05")) == 20
    assert prune_sweep.parse_fractions("0.5,0,0.62") == [0.0, 0.5, 0.62]
    for bad in ("0:1.2:0.1", "1", "-0.1", "a:b:c", "0:1:0", ""):
        with pytest.raises(ValueError, match="fractions"):
            prune_sweep.parse_fractions(bad)


def test_sweep_prunes_the_topographic_layers_and_writes_results(tmp_path):
    config, model = make_run(tmp_path / "topo", "grid")
    sweep = prune_sweep.prune_sweep(config.out, "0.5", log=lambda _: None)
    expected_layers = ["stem_conv"] + [f"stage{s}_block2_conv2" for s in range(1, 5)]
    assert sweep["layers"] == expected_layers and sweep["organisation"] == "grid-2d"
    from keras_topo import pruning

    masked = pruning.prune_channels(model, 0.5, mode="mask", coupling="expand")
    assert [p["fraction"] for p in sweep["points"]] == [0.5]
    assert sweep["points"][0]["accuracy"] == pytest.approx(accuracy(masked), abs=1e-6)
    stored = json.loads((tmp_path / "topo" / "pruning-l2-mask.json").read_text())
    assert stored == json.loads(json.dumps(sweep))
    csv_lines = (tmp_path / "topo" / "pruning-l2-mask.csv").read_text().splitlines()
    assert csv_lines[0].startswith("fraction,") and len(csv_lines) == 2


def test_baseline_is_pruned_at_its_architectures_topographic_layers_and_remove_equals_mask(
    tmp_path,
):
    config, model = make_run(tmp_path / "base", None)
    masked = prune_sweep.prune_sweep(config.out, [0.75], log=lambda _: None)
    removed = prune_sweep.prune_sweep(config.out, [0.75], mode="remove", log=lambda _: None)
    specs = applications.topographic_layer_specs("resnet18", width_multiplier=0.125)
    assert masked["layers"] == [spec.name for spec in specs] and len(specs) == 5
    assert masked["layers"][0] == "stem_conv" and masked["organisation"] == "baseline"
    for m, r in zip(masked["points"], removed["points"], strict=True):
        assert m["accuracy"] == pytest.approx(r["accuracy"], abs=1e-6)
        assert r["params"] < m["params"] == model.count_params()
    assert (tmp_path / "base" / "pruning-l2-remove.csv").exists()


def test_a_folder_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a run folder"):
        prune_sweep.prune_sweep(tmp_path, [0.5])
    config, _ = make_run(tmp_path / "r", None)
    (tmp_path / "r" / "best.keras").unlink()
    with pytest.raises(ValueError, match="best.keras"):
        prune_sweep.prune_sweep(config.out, [0.5])


def test_run_config_prefers_result_json(tmp_path):
    config, _ = make_run(tmp_path / "r", "grid")
    results.write(tmp_path / "r", {"config": {**config.to_dict(), "seed": 3}})
    assert run.RunFolder(tmp_path / "r").read_config().seed == 3


def test_a_sweep_run_again_computes_only_the_missing_fractions(tmp_path, monkeypatch):
    from keras_topo import pruning

    config, _ = make_run(tmp_path / "topo", "grid")
    calls = []
    real = pruning.prune_channels

    def counted(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(pruning, "prune_channels", counted)
    first = prune_sweep.prune_sweep(config.out, [0.5], log=lambda _: None)
    both = prune_sweep.prune_sweep(config.out, [0.0, 0.5], log=lambda _: None)
    assert calls == [0.5, 0.0]  # the stored 0.5 is reused
    assert [p["fraction"] for p in both["points"]] == [0.0, 0.5]
    assert both["points"][1] == first["points"][0]
    stored = json.loads((tmp_path / "topo" / "pruning-l2-mask.json").read_text())
    assert [p["fraction"] for p in stored["points"]] == [0.0, 0.5]
    # A retrained run (another best.keras) invalidates the stored points.
    checkpoint = tmp_path / "topo" / "best.keras"
    stat = checkpoint.stat()
    import os

    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    prune_sweep.prune_sweep(config.out, [0.5], log=lambda _: None)
    assert calls == [0.5, 0.0, 0.5]


def test_redundancy_through_the_sweep_reads_a_fixed_calibration_sample(tmp_path):
    from keras_topo import pruning

    config, model = make_run(tmp_path / "topo", "grid")
    with pytest.raises(ValueError, match="calibration_size"):
        prune_sweep.prune_sweep(config.out, [0.5], criterion="redundancy")
    sweep = prune_sweep.prune_sweep(
        config.out, [0.5], criterion="redundancy", calibration_size=64, log=lambda _: None
    )
    images = prune_sweep.calibration_images(config, None, 64)
    assert images.shape == (64, *digits.INPUT_SHAPE)
    np.testing.assert_array_equal(images, prune_sweep.calibration_images(config, None, 64))
    expected = pruning.prune_channels(
        model, 0.5, criterion="redundancy", mode="mask", coupling="expand", calibration_data=images
    )
    assert sweep["points"][0]["accuracy"] == pytest.approx(accuracy(expected), abs=1e-6)
    assert sweep["calibration_size"] == 64 and not sweep["compensate"]
    assert (tmp_path / "topo" / "pruning-redundancy-mask.json").exists()
    stem = run.RunFolder(tmp_path).pruning_stem("redundancy", "mask", compensate=True)
    assert stem.name == "pruning-redundancy-mask-compensated"
    assert (
        run.RunFolder(tmp_path).pruning_stem("l2", "remove", 2).name
        == "pruning-l2-remove-finetune2"
    )
