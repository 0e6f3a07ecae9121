"""Shipped size, CPU latency and accuracy: unpruned vs pruned 50 % (+ fine-tuned), per format.

Two CIFAR-10 models: a trained keras-topo ResNet-18 run (`--run`, e.g. from `keras-topo train
--dataset cifar10 ...`; pruned at its topographic layers, group coupling) and a
keras.applications MobileNetV2 (alpha 0.35, random init) trained here for `--mobilenet-epochs`
on the same run's training split (pruned at every Conv2D). Each model is exported as LiteRT and
ONNX, float and int8 (calibrated on the training split), and measured in one process: file
size, median batch-1 latency over interleaved rounds (the Keras row: `model(x)` eagerly, a
reference only), and top-1 accuracy on `--test-images` drawn at random (seeded) from the run's
test split.

    KERAS_BACKEND=tensorflow nice -n 5 python benchmarks/bench_export.py --run runs/cifar-grid
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from keras_topo import export, pruning, training_recipe
from keras_topo.experiments import datasets, export_run, run
from keras_topo.experiments.run_folder import RunFolder

VARIANTS = (("litert", None), ("litert", "int8"), ("onnx", None), ("onnx", "int8"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished CIFAR-10 ResNet-18 run")
    parser.add_argument("--data-dir", help="default: the run's")
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--mobilenet-epochs", type=int, default=3)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20, help="batch-1 calls per round")
    args = parser.parse_args()
    folder = RunFolder(args.run)
    config = folder.read_config()
    data_dir = args.data_dir or config.data_dir

    def split(name, batch_size=config.batch_size):
        subset = config.train_subset if name == "train" else None
        return datasets.load("cifar10", name, data_dir, batch_size, config.seed, subset).dataset

    # The test split is ordered by class: a seeded shuffle of the whole split, then a sample.
    test = split("test", 100).unbatch().shuffle(10_000, seed=0, reshuffle_each_iteration=False)
    test = test.take(args.test_images).batch(100).cache()
    resnet = folder.load_best_model()
    layers = run.topographic_layer_names(resnet, config)
    mobilenet = _trained_mobilenet(split("train"), args.mobilenet_epochs)
    models = {}
    for name, model, chosen in (
        ("ResNet-18 x0.5 (grid)", resnet, layers),
        ("MobileNetV2 x0.35", mobilenet, lambda layer: isinstance(layer, keras.layers.Conv2D)),
    ):
        pruned = pruning.prune_channels(model, args.fraction, layers=chosen)
        tuned = pruning.finetune(
            pruning.prune_channels(model, args.fraction, layers=chosen),
            split("train"),
            args.finetune_epochs,
            verbose=0,
        )
        percent = round(100 * args.fraction)
        models[(name, "unpruned")] = model
        models[(name, f"pruned {percent}%")] = pruned
        models[(name, f"pruned {percent}% + {args.finetune_epochs} ep fine-tune")] = tuned
    rows = _measure(models, split("train"), test, args)
    print(
        "| model | variant | format | size MB | size / float | latency ms | accuracy % |\n"
        "|---|---|---|---|---|---|---|"
    )
    for row in rows:
        print("| " + " | ".join(row) + " |")


def _trained_mobilenet(train, epochs):
    """keras.applications.MobileNetV2 (alpha 0.35, 32x32, 10 classes, logits), trained here."""
    model = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3),
        alpha=0.35,
        weights=None,
        classes=10,
        classifier_activation=None,
    )
    steps = int(train.cardinality())
    optimizer = training_recipe.make_optimizer(steps, epochs, learning_rate=0.05, weight_decay=5e-4)
    run.compile_model(model, optimizer=optimizer)
    model.fit(train, epochs=epochs, verbose=2)
    return model


def _measure(models, calibration, test, args):
    """Exports every model in every variant; returns table rows (strings)."""
    folder = Path(tempfile.mkdtemp(prefix="bench_export_"))
    sample = next(iter(test))[0][:1].numpy()
    entries = []  # [model, variant, format label, size, float size, predict, accuracy]
    for index, ((name, variant), model) in enumerate(models.items()):
        keras_file = folder / f"{index}.keras"
        model.save(keras_file)
        size = keras_file.stat().st_size
        entries.append([name, variant, "Keras", size, None, model, _keras_accuracy(model, test)])
        float_size = {}
        for format, quantize in VARIANTS:  # float first, so that int8 has its ratio
            path = folder / f"{index}-{quantize or 'float'}{export.SUFFIXES[format]}"
            export.export_model(model, path, format, quantize, calibration)
            size = export_run.file_size(path)
            float_size.setdefault(format, size)
            label = f"{'LiteRT' if format == 'litert' else 'ONNX'} {quantize or 'float32'}"
            predict = export.load_exported(path)
            accuracy = export_run.exported_accuracy(path, test)
            entries.append([name, variant, label, size, float_size[format], predict, accuracy])
    latencies = [[] for _ in entries]
    for _ in range(args.rounds):  # Interleaved, so that load changes hit every entry alike.
        for entry, times in zip(entries, latencies, strict=True):
            predict = entry[5]
            predict(sample)
            for _ in range(args.calls):
                start = time.perf_counter()
                predict(sample)
                times.append(time.perf_counter() - start)
    rows = []
    for entry, times in zip(entries, latencies, strict=True):
        name, variant, label, size, float_size, _, accuracy = entry
        ratio = f"{size / float_size:.2f}" if float_size else ""
        rows.append(
            [
                name,
                variant,
                label,
                f"{size / 1e6:.2f}",
                ratio,
                f"{1e3 * statistics.median(times):.2f}",
                f"{100 * accuracy:.1f}",
            ]
        )
    return rows


def _keras_accuracy(model, test):
    correct = total = 0
    for x, y in test:
        logits = keras.ops.convert_to_numpy(model(x, training=False))
        correct += int(np.sum(np.argmax(logits, -1) == y.numpy()))
        total += len(logits)
    return correct / total


if __name__ == "__main__":
    from keras_topo.experiments.fast_path import settings_line

    print(settings_line(), flush=True)  # the backend, oneDNN and thread settings of this run
    main()
