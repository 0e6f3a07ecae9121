"""`export_model`: a trained (pruned) model as a file that a runtime loads, optionally quantized.

Topographic losses are training-only, so a model with topographic layers is first
`keras_topo.strip_topography`-ed; a model without them is exported as it is.
Every route is a maintained converter; none is written here:

| format | route | TensorFlow | JAX | torch |
|---|---|---|---|---|
| `saved_model` | `model.export(format="tf_saved_model")` | yes | yes (jax2tf) | no |
| `litert` | that SavedModel -> `tf.lite.TFLiteConverter` | yes | yes | no |
| `onnx` | `model.export(format="onnx")` | tf2onnx | jax2onnx (if installed) | torch.onnx |

Quantization: `"float16"` (LiteRT: float16 weights, `target_spec.supported_types`) and
`"int8"` (LiteRT: the converter's post-training quantization with a representative dataset;
ONNX: onnxruntime's `quantize_static`, QDQ, per-channel int8 weights). Inputs and outputs stay
float32 in every format, so a quantized file is a drop-in for the float one.
"""

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np

from keras_topo.conversion import has_topography, strip_topography

FORMATS = ("saved_model", "litert", "onnx")
QUANTIZATIONS = {
    "saved_model": (None,),
    "litert": (None, "float16", "int8"),
    "onnx": (None, "int8"),
}
SUFFIXES = {"litert": ".tflite", "onnx": ".onnx"}
BACKENDS = {
    "saved_model": ("tensorflow", "jax"),
    "litert": ("tensorflow", "jax"),
    "onnx": ("tensorflow", "jax", "torch"),
}
# Python modules each export needs, per backend (the converters, not the runtimes).
CONVERTER_MODULES = {
    ("onnx", "tensorflow"): ("tf2onnx", "onnx"),
    ("onnx", "jax"): ("jax2onnx", "onnx"),
    ("onnx", "torch"): ("onnx",),
}
# Samples of the calibration set used for int8 (the converters' usual few hundred).
CALIBRATION_SAMPLES = 256
_EXTRA = "pip install keras-topo[export]"


def export_model(model, path, format="saved_model", quantize=None, calibration_data=None):
    """Writes `model` for inference at `path`, without its topographic losses.

    Args:
        model: a Sequential or functional `keras.Model` (e.g. a pruned one), single input for
            int8 calibration.
        path: where to write; must not exist. LiteRT needs a `.tflite` name, ONNX a `.onnx`
            one; a SavedModel is a folder. The file appears only once complete.
        format: "saved_model", "litert" or "onnx".
        quantize: None, "float16" (LiteRT) or "int8" (LiteRT, ONNX).
        calibration_data: for int8, inputs the model sees in training `(N, *input_shape)`:
            an array, or an iterable of batches `x` or `(x, y)` (e.g. a `tf.data.Dataset`);
            the first `CALIBRATION_SAMPLES` are used.

    Returns:
        `path` as a `pathlib.Path`.
    """
    path = Path(path)
    _check_request(model, path, format, quantize)
    calibration = None
    if quantize == "int8":
        calibration = calibration_array(calibration_data, model)
    if has_topography(model):  # else exported as it is: no copy, no config round trip
        model = strip_topography(model)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        staged = staging / path.name
        {"saved_model": _saved_model, "litert": _litert, "onnx": _onnx}[format](
            model, staged, quantize, calibration, staging
        )
        os.replace(staged, path)  # Same folder, so an atomic rename.
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _check_request(model, path, format, quantize):
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}.")
    if quantize not in QUANTIZATIONS[format]:
        raise ValueError(
            f"quantize={quantize!r} is not offered for format {format!r}; "
            f"choose one of {QUANTIZATIONS[format]}."
        )
    if format in SUFFIXES and path.suffix != SUFFIXES[format]:
        raise ValueError(f"a {format} file name must end in {SUFFIXES[format]!r}, got {path}.")
    if path.exists():
        raise FileExistsError(f"{path} exists; remove it or choose another path.")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent} is not a folder; create it first.")
    backend = keras.backend.backend()
    if backend not in BACKENDS[format]:
        raise ValueError(
            f"{format} export is not available on the {backend} backend (Keras exports it on "
            f"{', '.join(BACKENDS[format])}). Save the model as .keras and export it under "
            f"KERAS_BACKEND={BACKENDS[format][0]}: a .keras file loads in any backend."
        )
    missing = [
        name
        for name in CONVERTER_MODULES.get((format, backend), ())
        + (("onnxruntime",) if format == "onnx" and quantize else ())
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        hint = "pip install jax2onnx" if "jax2onnx" in missing else _EXTRA
        raise ImportError(
            f"{format} export on the {backend} backend needs {', '.join(missing)}: {hint}."
        )
    if len(model.inputs) != 1 and quantize == "int8":
        raise ValueError("int8 calibration supports single-input models only.")


def calibration_array(data, model, limit=CALIBRATION_SAMPLES):
    """Up to `limit` inputs of `model` from an array or an iterable of batches, in the model
    input's dtype (float32 images, int32 token ids).

    Raises:
        ValueError: no data, or samples whose shape the model does not take.
    """
    if data is None:
        raise ValueError(
            "quantize='int8' needs calibration_data: a few hundred training inputs, "
            "an array (N, *input_shape) or a dataset of batches."
        )
    if isinstance(data, np.ndarray) or keras.ops.is_tensor(data):
        batches = [data]
    else:
        batches = data
    samples, count = [], 0
    dtype = keras.backend.standardize_dtype(model.inputs[0].dtype)
    for batch in batches:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]  # (x, y) or (x, y, sample_weight)
        batch = np.asarray(keras.ops.convert_to_numpy(batch), dtype=dtype)
        samples.append(batch[: limit - count])
        count += len(samples[-1])
        if count >= limit:
            break
    expected = tuple(model.inputs[0].shape[1:])
    shapes = {tuple(batch.shape[1:]) for batch in samples}
    if count == 0 or len(shapes) != 1 or not _fits(shapes.pop(), expected):
        got = sorted({tuple(batch.shape) for batch in samples})
        raise ValueError(
            f"calibration_data must be inputs of shape (N, {', '.join(map(str, expected))}) "
            f"for model {model.name!r}; got batches of shape {got or 'none (empty)'}."
        )
    return np.concatenate(samples)


def _fits(shape, expected):
    return len(shape) == len(expected) and all(
        e is None or s == e for s, e in zip(shape, expected, strict=True)
    )


def _saved_model(model, path, quantize, calibration, staging):
    model.export(str(path), format="tf_saved_model", verbose=False)


def _litert(model, path, quantize, calibration, staging):
    import tensorflow as tf

    saved_model = staging / "saved_model"
    model.export(str(saved_model), format="tf_saved_model", verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        converter.representative_dataset = lambda: ([sample[None]] for sample in calibration)
    flatbuffer = converter.convert()
    if quantize == "int8":
        _check_int8_ranges(flatbuffer)
    path.write_bytes(flatbuffer)


def _check_int8_ranges(flatbuffer):
    """Refuses an int8 LiteRT model with an infinite calibration range: the converter writes
    it (scale ~ float32 max / 255), but the interpreter aborts the process when it loads it."""
    interpreter = _litert_interpreter()(model_content=flatbuffer)
    limit = np.finfo("float32").max / 512  # a range wider than half of float32's
    unbounded = [
        tensor["name"]
        for tensor in interpreter.get_tensor_details()
        if np.any(tensor["quantization_parameters"]["scales"] > limit)
    ]
    if unbounded:
        raise ValueError(
            f"int8 quantization met an infinite value range at {unbounded[0]!r} "
            f"({len(unbounded)} tensors): a layer produces +-inf (e.g. a pad with -inf before "
            "a max pool, as keras-hub's ResNetV2 stem), which int8 cannot hold. Export float "
            "or float16, or make that constant finite."
        )


def _onnx(model, path, quantize, calibration, staging):
    # Keras' ONNX export refuses a model that was never called (predict on JAX does not count).
    zeros = [np.zeros((1, *spec.shape[1:]), dtype=spec.dtype) for spec in model.inputs]
    model(zeros if len(zeros) > 1 else zeros[0])
    target = staging / "float.onnx" if quantize else path
    model.export(str(target), format="onnx", verbose=False)
    if quantize == "int8":
        _onnx_int8(target, path, calibration, staging)


def _onnx_int8(source, path, calibration, staging):
    import onnx
    from onnxruntime import quantization

    class Reader(quantization.CalibrationDataReader):
        def __init__(self, name):
            self.samples = iter(calibration)
            self.name = name

        def get_next(self):
            sample = next(self.samples, None)
            return None if sample is None else {self.name: sample[None]}

    prepared = staging / "prepared.onnx"
    quantization.quant_pre_process(str(source), str(prepared))
    name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
    quantization.quantize_static(
        str(prepared),
        str(path),
        Reader(name),
        quant_format=quantization.QuantFormat.QDQ,
        per_channel=True,
        weight_type=quantization.QuantType.QInt8,
        activation_type=quantization.QuantType.QInt8,
    )


def load_exported(path):
    """A function `inputs (N, ...) float32 -> outputs (N, ...)` running an exported model in
    its runtime: ONNX Runtime (`.onnx`), the LiteRT interpreter (`.tflite`; ai-edge-litert, else
    TensorFlow's copy), or TensorFlow (a SavedModel folder)."""
    path = Path(path)
    if path.suffix == ".onnx":
        return _onnx_runner(path)
    if path.suffix == ".tflite":
        return _litert_runner(path)
    if (path / "saved_model.pb").exists():
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))  # Kept alive: `serve` uses its variables.
        return lambda inputs: np.asarray(loaded.serve(np.asarray(inputs, dtype="float32")))
    raise ValueError(f"{path} is neither a .onnx or .tflite file nor a SavedModel folder.")


def _onnx_runner(path):
    if importlib.util.find_spec("onnxruntime") is None:
        raise ImportError(f"running {path} needs onnxruntime: {_EXTRA}.")
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda inputs: session.run(None, {name: np.asarray(inputs, dtype="float32")})[0]


def _litert_interpreter():
    """The LiteRT interpreter class: ai-edge-litert's, else TensorFlow's copy."""
    if importlib.util.find_spec("ai_edge_litert") is not None:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    import tensorflow as tf

    return tf.lite.Interpreter


def _litert_runner(path):
    interpreter = _litert_interpreter()(model_path=str(path))
    (given,) = interpreter.get_input_details()
    (output,) = interpreter.get_output_details()

    def run(inputs):
        inputs = np.asarray(inputs, dtype=given["dtype"])  # float32, or int32 token ids
        if tuple(interpreter.get_input_details()[0]["shape"]) != inputs.shape:
            interpreter.resize_tensor_input(given["index"], inputs.shape)
            interpreter.allocate_tensors()
        interpreter.set_tensor(given["index"], inputs)
        interpreter.invoke()
        return interpreter.get_tensor(output["index"]).copy()

    interpreter.allocate_tensors()
    return run
