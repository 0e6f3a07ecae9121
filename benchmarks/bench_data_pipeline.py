"""Data-pipeline throughput against what a ResNet-18 training step consumes (TF backend, CPU).

Measures, in one run:
- CIFAR training pipeline (random crop + flip + normalise, batch 64): images/s;
- log-mel from WAV files (read + resample + 64 x 101 log-mel, the loaders' one-off pass): clips/s;
- ResNet-18 training steps (batch 64) on 32x32x3 images and on 64x101x1 log-mels: examples/s
  (or `--step-images-per-s` to skip the model timing).

    python benchmarks/bench_data_pipeline.py --data-dir /tmp/ktdata

`--data-dir` (or one of its sub-folders) must hold a CIFAR copy (`train/<class>/` or
`cifar-10-batches-py/`) and a Speech Commands layout (`validation_list.txt`).
"""

import argparse
import glob
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_topo.data import cifar  # noqa: E402
from keras_topo.data.decode import decode_clips  # noqa: E402
from keras_topo.data.errors import BadFiles  # noqa: E402


def _find(root, markers):
    """`root` and its sub-folders that hold one of `markers`."""
    folders = [root, *sorted(glob.glob(os.path.join(root, "*")))]
    found = [f for f in folders if any(os.path.exists(os.path.join(f, m)) for m in markers)]
    if not found:
        raise SystemExit(f"No folder with {markers} under {root}")
    return found


def _median_rate(fn, repeats):
    """Median of `count / seconds` over `repeats` calls of `fn() -> count`."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        count = fn()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def cifar_rate(data_dir, batches, repeats):
    dataset = cifar(data_dir, split="train", batch_size=64, seed=0)
    next(iter(dataset))  # build the pipeline once

    def run():
        return sum(int(x.shape[0]) for x, _ in dataset.take(batches))

    return _median_rate(run, repeats)


def log_mel_rate(speech_dir, clips, repeats):
    paths = sorted(glob.glob(os.path.join(speech_dir, "*", "*.wav")))[:clips]
    decode_clips(paths[:64], BadFiles("raise"), length=16000)  # warm up the traced function
    return _median_rate(lambda: len(decode_clips(paths, BadFiles("raise"), 16000)[0]), repeats)


def resnet_rate(input_shape, num_classes, steps):
    from keras_topo.applications import ResNet18

    model = ResNet18(input_shape=input_shape, num_classes=num_classes)
    model.compile(
        keras.optimizers.SGD(0.01, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, *input_shape)).astype("float32")
    y = rng.integers(0, num_classes, 64)
    model.train_on_batch(x, y)  # trace
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return 64 * steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--step-images-per-s", type=float, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=150, help="CIFAR batches per repeat")
    parser.add_argument("--clips", type=int, default=1500, help="WAV files per repeat")
    parser.add_argument("--steps", type=int, default=4, help="ResNet-18 steps timed")
    args = parser.parse_args()

    cifar_dir = _find(args.data_dir, ["train", "cifar-10-batches-py"])[0]
    images = cifar_rate(cifar_dir, args.batches, args.repeats)
    clips = {
        d: log_mel_rate(d, args.clips, args.repeats)
        for d in _find(args.data_dir, ["validation_list.txt"])
    }
    if args.step_images_per_s:
        image_step = audio_step = args.step_images_per_s
    else:
        image_step = resnet_rate((32, 32, 3), 10, args.steps)
        audio_step = resnet_rate((64, 101, 1), 12, args.steps)
    print(f"CIFAR augmentation pipeline : {images:9.0f} images/s ({cifar_dir})")
    for folder, rate in clips.items():
        print(f"log-mel from WAV files      : {rate:9.0f} clips/s ({folder})")
    print(f"ResNet-18 step, 32x32x3     : {image_step:9.1f} images/s consumed")
    print(f"ResNet-18 step, 64x101x1    : {audio_step:9.1f} clips/s consumed")
    print(f"ratio CIFAR pipeline / step : {images / image_step:9.1f}x (goal >= 10x)")
    slowest = min(clips.values())
    print(f"ratio log-mel / audio step  : {slowest / audio_step:9.1f}x (slowest set; goal >= 10x)")
    print(f"ratio log-mel / image step  : {slowest / image_step:9.1f}x")


if __name__ == "__main__":
    main()
