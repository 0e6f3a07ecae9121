"""`keras_topo.export_model`: runtime parity (ONNX Runtime, LiteRT), int8, and bad input.

The model is a small topographic CNN trained briefly on scikit-learn's real digit scans, so
that its top-1 classes mean something when int8 is compared with float.
"""

import importlib.util
import os

import keras
import numpy as np
import pytest

import keras_topo
from keras_topo import export
from keras_topo.experiments import digits

BACKEND = keras.backend.backend()


def _can_export(format):
    """The backend has a route and its converter (and, for ONNX, onnxruntime) is installed."""
    if BACKEND not in export.BACKENDS[format]:
        return False
    needed = export.CONVERTER_MODULES.get((format, BACKEND), ())
    needed += ("onnxruntime",) if format == "onnx" else ()
    return all(importlib.util.find_spec(name) for name in needed)


def _needs(format):
    return pytest.mark.skipif(
        not _can_export(format), reason=f"{format} export is not available on {BACKEND} here"
    )


@pytest.fixture(scope="module")
def trained():
    """(model, train images, test images): conv -> dense, about 270k weights, trained 3 epochs."""
    keras.utils.set_random_seed(0)
    x, y = digits.arrays("train")
    inputs = keras.Input(digits.INPUT_SHAPE)
    h = keras_topo.TopographicConv2D(16, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
    h = keras.layers.Dense(128, activation="relu")(keras.layers.Flatten()(h))
    model = keras.Model(inputs, keras.layers.Dense(10)(h))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    return model, x, digits.arrays("test")[0]


@pytest.fixture(scope="module")
def float_files(trained, tmp_path_factory):
    """Float exports, made once per format on demand."""
    folder, made = tmp_path_factory.mktemp("float"), {}

    def get(format):
        if format not in made:
            name = "model" + export.SUFFIXES.get(format, "")
            made[format] = export.export_model(trained[0], folder / name, format)
        return made[format]

    return get


@pytest.mark.parametrize(
    "format", [pytest.param(f, marks=_needs(f)) for f in ("onnx", "litert", "saved_model")]
)
def test_float_export_matches_keras(trained, float_files, format):
    model, _, x_test = trained
    path = float_files(format)
    expected = keras.ops.convert_to_numpy(model(x_test))
    got = export.load_exported(path)(x_test)
    assert got.shape == expected.shape == (len(x_test), 10)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("format", [pytest.param(f, marks=_needs(f)) for f in ("onnx", "litert")])
def test_int8_agrees_on_top1_and_is_small(trained, float_files, tmp_path, format):
    model, x_train, x_test = trained
    path = tmp_path / f"int8{export.SUFFIXES[format]}"
    keras_topo.export_model(model, path, format, quantize="int8", calibration_data=x_train)
    expected = np.argmax(keras.ops.convert_to_numpy(model(x_test)), axis=1)
    got = np.argmax(export.load_exported(path)(x_test), axis=1)
    assert np.mean(got == expected) >= 0.95
    assert os.path.getsize(path) <= 0.30 * os.path.getsize(float_files(format))


@_needs("litert")
def test_litert_float16_halves_the_file(trained, float_files, tmp_path):
    model, _, x_test = trained
    path = keras_topo.export_model(model, tmp_path / "half.tflite", "litert", quantize="float16")
    expected = keras.ops.convert_to_numpy(model(x_test))
    got = export.load_exported(path)(x_test)
    np.testing.assert_allclose(got, expected, atol=0.05, rtol=0)
    assert np.mean(np.argmax(got, 1) == np.argmax(expected, 1)) >= 0.99
    assert os.path.getsize(path) <= 0.55 * os.path.getsize(float_files("litert"))


def test_unavailable_backend_says_which_backends_export(trained, tmp_path):
    unavailable = [f for f in export.FORMATS if BACKEND not in export.BACKENDS[f]]
    if not unavailable:
        pytest.skip(f"every format has a Keras route on {BACKEND}")
    for format in unavailable:
        name = "m" + export.SUFFIXES.get(format, "")
        with pytest.raises(ValueError, match="KERAS_BACKEND=tensorflow"):
            keras_topo.export_model(trained[0], tmp_path / name, format)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"format": "tflite"}, "format must be one of"),
        ({"format": "onnx", "quantize": "float16"}, "not offered for format 'onnx'"),
        ({"format": "saved_model", "quantize": "int8"}, "not offered"),
        ({"format": "litert", "quantize": "int4"}, "not offered"),
        ({"format": "litert", "name": "model.onnx"}, "must end in '.tflite'"),
    ],
)
def test_bad_requests_are_refused(trained, tmp_path, kwargs, match):
    name = kwargs.pop("name", "model" + export.SUFFIXES.get(kwargs["format"], ""))
    with pytest.raises(ValueError, match=match):
        keras_topo.export_model(trained[0], tmp_path / name, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_existing_path_is_refused_and_kept(trained, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_text("keep me")
    with pytest.raises(FileExistsError, match="exists"):
        keras_topo.export_model(trained[0], path, "onnx")
    assert path.read_text() == "keep me"


@_needs("litert")
def test_int8_calibration_is_checked(trained, tmp_path):
    model, x_train, _ = trained
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match="needs calibration_data"):
        keras_topo.export_model(model, path, "litert", quantize="int8")
    with pytest.raises(ValueError, match=r"shape \(N, 16, 16, 1\).*\(8, 32, 32, 3\)"):
        keras_topo.export_model(
            model, path, "litert", quantize="int8", calibration_data=np.zeros((8, 32, 32, 3))
        )
    assert list(tmp_path.iterdir()) == []


@_needs("litert")
def test_int8_with_an_infinite_range_is_refused_not_written(tmp_path):
    # A -inf pad before a max pool (keras-hub's ResNetV2 stem): the converter writes scales of
    # about float32 max / 255, and the interpreter aborts the process when it loads the file.
    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(4, 1)(inputs)
    padded = keras.ops.pad(features, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=-np.inf)
    pooled = keras.layers.MaxPooling2D(3, strides=2)(padded)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(pooled)))
    x = np.random.default_rng(0).standard_normal((8, 8, 8, 3)).astype("float32")
    with pytest.raises(ValueError, match="infinite value range"):
        keras_topo.export_model(
            model, tmp_path / "m.tflite", "litert", quantize="int8", calibration_data=x
        )
    assert list(tmp_path.iterdir()) == []


@_needs("litert")
def test_int8_of_a_model_on_token_ids_calibrates_with_the_ids(tmp_path):
    # The ids stay int32 (an embedding lookup cannot take float ids); the activations are int8.
    keras.utils.set_random_seed(0)
    tokens = keras.Input((6,), dtype="int32")
    h = keras.layers.Embedding(50, 8)(tokens)
    model = keras.Model(tokens, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(h)))
    ids = np.random.default_rng(0).integers(0, 50, (64, 6)).astype("int32")
    assert export.calibration_array(ids, model).dtype == np.int32
    path = keras_topo.export_model(
        model, tmp_path / "m.tflite", "litert", quantize="int8", calibration_data=ids
    )
    want = keras.ops.convert_to_numpy(model(ids))
    np.testing.assert_allclose(
        export.load_exported(path)(ids), want, atol=0.05 * np.abs(want).max()
    )


def test_calibration_array_takes_batches_and_keeps_the_first_samples(trained):
    model, x_train, _ = trained
    batches = [(x_train[i : i + 100], None) for i in range(0, 400, 100)]
    got = export.calibration_array(batches, model, limit=250)
    np.testing.assert_array_equal(got, x_train[:250])


def test_missing_converter_names_the_extra(trained, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a)
    )
    if BACKEND not in export.BACKENDS["onnx"]:
        pytest.skip("no ONNX route on this backend")
    with pytest.raises(ImportError, match=r"needs .*onnx.*pip install"):
        keras_topo.export_model(trained[0], tmp_path / "m.onnx", "onnx")


def test_failed_export_leaves_nothing(trained, tmp_path, monkeypatch):
    format = "onnx" if BACKEND in export.BACKENDS["onnx"] else "saved_model"
    name = "m" + export.SUFFIXES.get(format, "")

    def half_write(self, path, *args, **kwargs):
        with open(path, "w") as f:
            f.write("half")
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(keras.Model, "export", half_write)
    monkeypatch.setattr(export, "CONVERTER_MODULES", {})
    with pytest.raises(RuntimeError, match="converter crashed"):
        keras_topo.export_model(trained[0], tmp_path / name, format)
    assert list(tmp_path.iterdir()) == []


def test_export_command_ships_a_pruned_run(tmp_path, capsys):
    from test_experiments_prune import make_run

    from keras_topo import cli, pruning

    format = "onnx" if _can_export("onnx") else "litert"
    if not _can_export(format):
        pytest.skip(f"neither ONNX nor LiteRT exports on {BACKEND} here")
    config, model = make_run(tmp_path / "topo", "grid")
    argv = ["export", config.out, "--format", format, "--prune", "0.5"]
    assert cli.main(argv) == 0
    path = tmp_path / "topo" / "export" / f"best-pruned50{export.SUFFIXES[format]}"
    assert path.is_file()
    # The exported file's test accuracy is the pruned Keras model's.
    small = pruning.prune_channels(model, 0.5)  # the topographic layers, group coupling
    images, labels = digits.arrays("test")
    expected = np.mean(np.argmax(keras.ops.convert_to_numpy(small(images)), -1) == labels)
    assert f"test accuracy {expected:.4f}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert "exists" in capsys.readouterr().err
