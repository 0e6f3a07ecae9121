"""The ViT builder (`keras_topo.applications.ViT`) and the transformer study (`vit_study`)."""

import dataclasses
import json

import keras
import numpy as np
import pytest
from keras_topo.applications import ViT, topographic_layer_specs
from keras_topo.applications.position_embedding import PositionEmbedding

import keras_topo
from keras_topo.experiments import vit_study

TINY = {"patch_size": 4, "num_blocks": 2, "hidden_dim": 8, "num_heads": 2, "mlp_dim": 12}


def tiny_vit(**changes):
    return ViT((8, 12, 3), 5, **{**TINY, **changes})


def test_vit_shapes_names_and_parameter_count():
    model = tiny_vit()
    x = np.random.default_rng(0).normal(size=(2, 8, 12, 3)).astype("float32")
    assert tuple(model(x).shape) == (2, 5)
    tokens, patch, embed, mlp = 2 * 3, 4 * 4 * 3, 8, 12
    assert tuple(model.get_layer("position_embedding").output.shape) == (None, tokens, embed)
    assert model.get_layer("block2_attention").num_heads == 2
    # Counted by hand: patch Dense, positions, per block 2 LayerNorms, attention (q, k, v, o
    # with biases), MLP; final LayerNorm and classifier.
    attention = 3 * (embed * embed + embed) + embed * embed + embed
    block = 2 * 2 * embed + attention + (embed * mlp + mlp) + (mlp * embed + embed)
    expected = patch * embed + embed + tokens * embed + 2 * block + 2 * embed + embed * 5 + 5
    assert model.count_params() == expected


def test_vit_patches_are_the_image_tiles_in_row_major_order():
    model = tiny_vit()
    x = np.random.default_rng(1).normal(size=(2, 8, 12, 3)).astype("float32")
    patches = keras.Model(model.inputs, model.get_layer("patches").output)(x)
    expected = [
        x[:, r * 4 : (r + 1) * 4, c * 4 : (c + 1) * 4, :].reshape(2, -1)
        for r in range(2)
        for c in range(3)
    ]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(patches), np.stack(expected, 1))


def test_position_embedding_adds_its_table_and_round_trips(tmp_path):
    inputs = keras.Input((3, 4))
    model = keras.Model(inputs, PositionEmbedding(name="positions")(inputs))
    table = np.arange(12, dtype="float32").reshape(3, 4)
    model.get_layer("positions").embedding.assign(table)
    x = np.ones((2, 3, 4), "float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), x + table)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), x + table)
    with pytest.raises(ValueError, match="static tokens"):
        PositionEmbedding()(keras.Input((None, 4)))


def test_pruning_the_residual_width_narrows_the_position_table():
    model = tiny_vit()
    pruned = keras_topo.pruning.prune_channels(model, 0.5, layers=["patch_embed"], mode="remove")
    kept = pruned.get_layer("position_embedding").embedding
    assert tuple(kept.shape) == (6, 4)
    table = keras.ops.convert_to_numpy(model.get_layer("position_embedding").embedding)
    kept = keras.ops.convert_to_numpy(kept)
    # The kept columns are original columns, in order.
    columns = [int(np.argmin(np.abs(table - kept[:, [j]]).sum(0))) for j in range(4)]
    assert columns == sorted(columns) and np.allclose(table[:, columns], kept)


def test_vit_topography_is_on_the_mlp_hidden_layers():
    plain = tiny_vit()
    assert [layer.name for layer in keras_topo.topographic_layers(plain)] == []
    model = tiny_vit(topography=keras_topo.Topography("grid"))
    names = [layer.name for layer in keras_topo.topographic_layers(model)]
    assert names == ["block1_mlp1", "block2_mlp1"]
    specs = topographic_layer_specs("vit", "grid", width_multiplier=0.5)
    assert [(s.name, s.filters) for s in specs] == [(f"block{b}_mlp1", 64) for b in (1, 2, 3, 4)]
    only = tiny_vit(topography="grid", topographic_layers=["block2_mlp1"])
    assert [layer.name for layer in keras_topo.topographic_layers(only)] == ["block2_mlp1"]


def test_vit_refuses_bad_sizes():
    with pytest.raises(ValueError, match="patch_size 5 must divide"):
        tiny_vit(patch_size=5)
    with pytest.raises(ValueError, match="num_heads must be a positive integer"):
        tiny_vit(num_heads=0)
    with pytest.raises(ValueError, match="block1_mlp2"):
        tiny_vit(topography="grid", topographic_layers=["block1_mlp2"])


def test_spec_files_and_bad_specs(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"base": "cpu", "epochs": 2, "methods": ["l1"]}))
    spec = vit_study.load_spec(str(path))
    assert (spec.epochs, spec.methods, spec.num_blocks) == (2, ("l1",), 4)
    path.write_text(json.dumps({"epoch": 2}))
    with pytest.raises(ValueError, match="unknown fields"):
        vit_study.load_spec(str(path))
    with pytest.raises(ValueError, match="neither a built-in spec"):
        vit_study.load_spec("gpu")
    with pytest.raises(ValueError, match="methods"):
        vit_study.ViTStudySpec(methods=("l3",))
    with pytest.raises(ValueError, match="fractions"):
        vit_study.ViTStudySpec(fractions=(0.0, 1.0))


def test_report_averages_scores_and_counts_significant_layers():
    spec = vit_study.ViTStudySpec(methods=("l2",), fractions=(0.0, 0.5))
    maps = {
        "a": {"distance_correlation": 0.2, "selectivity_p_value": 0.01, "channels": 4},
        "b": {"distance_correlation": 0.5, "selectivity_p_value": 0.2, "channels": 4},
    }
    pruning = [
        {"target": target, "method": "l2", "fraction": f, "accuracy": a, "params": 9}
        for target in vit_study.TARGETS
        for f, a in ((0.0, 0.5), (0.5, 0.25))
    ]
    result = {
        "test_accuracy": 0.5,
        "params": 9,
        "time_s": {"train": 1.0, "run": 2.0},
        "map_scores": maps,
        "pruning": pruning,
    }
    markdown = vit_study.report_markdown(spec, [("baseline", 0, result)])
    assert "| baseline | 0 | 0.5000 | 9 | 1.0 | 2.0 | 0.350 | 1/2 |" in markdown
    assert markdown.count("| baseline | 0 | l2 | 0.500 | 0.250 |") == 2


def _image_folder(root, per_class):
    """A CIFAR-10 image folder `root/{train,test}/<class>/*.jpg` of random 32x32 images."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", 2)):
        for k in range(10):
            folder = root / split / f"class{k}"
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                (folder / f"{i}.jpg").write_bytes(tf.io.encode_jpeg(image).numpy())


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished tiny study: two variants, 1 epoch, fractions 0 and 0.5, on generated images."""
    root = tmp_path_factory.mktemp("vit_study")
    _image_folder(root / "data", per_class=4)
    spec = vit_study.ViTStudySpec(
        epochs=1,
        train_subset=None,
        test_subset=None,
        validation_size=10,
        batch_size=16,
        patch_size=8,
        num_blocks=1,
        hidden_dim=8,
        num_heads=2,
        mlp_dim=16,
        variants=vit_study.VARIANTS[:2],
        methods=("l2", "l2-mask"),
        fractions=(0.0, 0.5),
        verbose=0,
    )
    logs = []
    markdown, path = vit_study.run_study(spec, root / "runs", root / "data", log=logs.append)
    return spec, root, markdown, path, logs


@pytest.mark.slow
def test_study_end_to_end(study):
    spec, root, markdown, path, _ = study
    assert path.read_text() == markdown
    for variant in spec.variants:
        result = json.loads((root / "runs" / f"{variant.name}-seed0" / "result.json").read_text())
        points = {(p["target"], p["method"], p["fraction"]): p for p in result["pruning"]}
        assert len(points) == 2 * 2 * 2
        for target in vit_study.TARGETS:
            unpruned = points[(target, "l2", 0.0)]
            assert unpruned["accuracy"] == result["test_accuracy"]
            assert unpruned["params"] == result["params"]
            # Removing heads or MLP units computes what masking them does, with fewer params.
            removed, masked = points[(target, "l2", 0.5)], points[(target, "l2-mask", 0.5)]
            assert removed["accuracy"] == pytest.approx(masked["accuracy"], abs=1 / 20)
            assert masked["params"] == result["params"] > removed["params"]
        assert list(result["map_scores"]) == ["block1_mlp1"]
        assert -1 <= result["map_scores"]["block1_mlp1"]["distance_correlation"] <= 1
        assert f"| {variant.name} | 0 | {result['test_accuracy']:.4f} |" in markdown


@pytest.mark.slow
def test_study_resumes_and_skips_finished_runs(study):
    spec, root, markdown, _, _ = study
    runs = root / "runs"
    finished = runs / f"{spec.variants[0].name}-seed0" / "result.json"
    before = finished.stat().st_mtime_ns
    resumed = runs / f"{spec.variants[1].name}-seed0"
    accuracy = json.loads((resumed / "result.json").read_text())["test_accuracy"]
    (resumed / "result.json").unlink()  # killed after training: trained.keras is kept
    logs = []
    again, _ = vit_study.run_study(spec, runs, root / "data", log=logs.append)
    assert any("finished, skipped" in line for line in logs)
    assert any("training skipped" in line for line in logs)
    assert finished.stat().st_mtime_ns == before
    assert json.loads((resumed / "result.json").read_text())["test_accuracy"] == accuracy
    other = dataclasses.replace(spec, epochs=2)
    with pytest.raises(ValueError, match="holds a run of other settings"):
        vit_study.run_study(other, runs, root / "data")
    (resumed / "result.json").unlink()
    other = dataclasses.replace(other, variants=spec.variants[1:])
    with pytest.raises(ValueError, match="trained with other settings"):
        vit_study.run_study(other, runs, root / "data")
