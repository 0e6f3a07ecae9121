"""Data-pipeline throughput per CPU core, before and after, and the cores one GPU needs.

Measures, in one run, pinned to `--cores` cores (`os.sched_setaffinity` before TensorFlow is
imported, tf.data's private threadpool of that size, one intra-op thread per tf.data op):
- CIFAR training pipeline (random crop + flip + normalise, batch 256), where the time goes:
  per-image `map` (the pipeline before batching: shuffle, map per image, batch) against the
  vectorised pipeline (`keras_topo.data.cifar`: shuffled indices, gather, one `map` per batch),
  each with and without augmentation; and the one-off JPEG decode at load;
- log-mel features from WAV files (read + resample + 64 x 101 log-mel): the loader's first
  load (decodes, writes the feature cache) against a later load (reads the cache), and
  training epochs over the loaded features;
- cores needed to feed a GPU: `--gpu-images-per-s` / (images per core-second).

Rates are given per wall-clock second and per CPU second of this process (`process_time`): on a
shared machine the second one is the per-core figure that other processes do not distort.

    python benchmarks/bench_data_pipeline.py --data-dir /tmp/ktdata --cores 1

`--data-dir` (or one of its sub-folders) must hold a CIFAR copy (`train/<class>/` or
`cifar-10-batches-py/`) and a Speech Commands layout (`validation_list.txt`).
"""

import argparse
import glob
import os
import shutil
import tempfile
import time


def _pin(cores):
    """Pins this process to its first `cores` allowed CPUs; returns them."""
    allowed = sorted(os.sched_getaffinity(0))
    if not 0 < cores <= len(allowed):
        raise SystemExit(f"--cores must be in [1, {len(allowed)}]; received {cores}")
    os.sched_setaffinity(0, allowed[:cores])
    return allowed[:cores]


def _find(root, markers):
    """`root` and its sub-folders that hold one of `markers`."""
    folders = [root, *sorted(glob.glob(os.path.join(root, "*")))]
    found = [f for f in folders if any(os.path.exists(os.path.join(f, m)) for m in markers)]
    if not found:
        raise SystemExit(f"No folder with {markers} under {root}")
    return found


def _rates(fn):
    """`(count / wall seconds, count / CPU seconds)` of one call of `fn() -> count`."""
    wall, cpu = time.perf_counter(), time.process_time()
    count = fn()
    return count / (time.perf_counter() - wall), count / (time.process_time() - cpu)


def _best(fn, repeats):
    """The best of `repeats` measurements (least disturbed by other processes)."""
    results = [_rates(fn) for _ in range(repeats)]
    return max(r[0] for r in results), max(r[1] for r in results)


def _epoch(dataset, epochs):
    """Examples in `epochs` passes over `dataset`."""
    return sum(int(y.shape[0]) for _ in range(epochs) for _, y in dataset)


def _audio_rates(speech_dir, clips, options):
    """Rates of the first and a later load of about `clips` training clips copied to a scratch
    folder, and of training epochs over their features (in memory after the load)."""
    import numpy as np

    from keras_topo.data import speech_commands

    scratch = tempfile.mkdtemp(prefix="bench_audio_")
    try:
        words = [w for w in sorted(os.listdir(speech_dir)) if os.path.isdir(f"{speech_dir}/{w}")]
        for word in words:
            os.makedirs(os.path.join(scratch, word))
            wavs = sorted(glob.glob(os.path.join(speech_dir, word, "*.wav")))
            for path in wavs[: max(1, clips // len(words))]:
                shutil.copy2(path, os.path.join(scratch, word))
        for name in ("validation_list.txt", "testing_list.txt"):
            open(os.path.join(scratch, name), "w").close()

        def load():
            return len(np.concatenate([x for x, _ in speech_commands(scratch, batch_size=256)]))

        first, later = _rates(load), _rates(load)
        dataset = speech_commands(scratch, batch_size=256).with_options(options)
        return first, later, _best(lambda: _epoch(dataset, 5), 3)
    finally:
        shutil.rmtree(scratch)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=60, help="CIFAR batches per repeat")
    parser.add_argument("--clips", type=int, default=1000, help="WAV files decoded")
    parser.add_argument(
        "--gpu-images-per-s",
        type=float,
        default=30000.0,
        help="images/s one GPU's training step consumes (assumed: ResNet-18 CIFAR, batch "
        "256, mixed precision, H200: 20-40k)",
    )
    args = parser.parse_args()
    cpus = _pin(args.cores)

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import numpy as np
    import tensorflow as tf

    from keras_topo.data import pipeline
    from keras_topo.data.cifar import MEAN, STD, cifar_arrays, cifar_pipeline

    options = tf.data.Options()
    options.threading.private_threadpool_size = args.cores
    options.threading.max_intra_op_parallelism = 1
    print(
        f"settings: CPUs {cpus} (sched_setaffinity), tf.data private_threadpool_size "
        f"{args.cores}, max_intra_op_parallelism 1, batch {args.batch_size}, TensorFlow "
        f"{tf.__version__}, TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}"
    )

    cifar_dir = _find(args.data_dir, ["train", "cifar-10-batches-py"])[0]
    decode = _rates(lambda: len(cifar_arrays(cifar_dir)[1]))
    images, labels = cifar_arrays(cifar_dir)

    def per_image(augment):
        """The pipeline before vectorising: shuffle, map per image, batch."""

        def prepare(image, label, seed):
            image = tf.cast(image, tf.float32) / 255.0
            if augment:
                crop_seed, flip_seed = tf.unstack(tf.random.split(seed, 2))
                padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
                image = tf.image.stateless_random_crop(padded, [32, 32, 3], seed=crop_seed)
                image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
            return (image - MEAN) / STD, label

        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
        return pipeline.finish(dataset, args.batch_size, True, 0, len(labels), prepare)

    def vectorised(augment):
        return cifar_pipeline(images, labels, args.batch_size, True, 0, augment)

    def rate(dataset):
        dataset = dataset.with_options(options)
        next(iter(dataset))  # build the pipeline once

        def run():
            return sum(int(x.shape[0]) for x, _ in dataset.take(args.batches))

        return _best(run, args.repeats)

    table = {
        (name, augment): rate(build(augment))
        for name, build in (("per-image map", per_image), ("vectorised", vectorised))
        for augment in (False, True)
    }

    print(f"\nCIFAR ({cifar_dir}), images/s on {args.cores} core(s): wall | per CPU second")
    print(f"  JPEG decode at load (once)         {decode[0]:9.0f} | {decode[1]:9.0f}")
    for (name, augment), (wall, cpu) in table.items():
        what = f"{name}, {'crop+flip+normalise' if augment else 'normalise only'}"
        print(f"  {what:<35}{wall:9.0f} | {cpu:9.0f}")
    before, after = table["per-image map", True], table["vectorised", True]
    print(
        f"  augmentation after/before          {after[0] / before[0]:9.1f}x | {after[1] / before[1]:8.1f}x"
    )

    for speech_dir in _find(args.data_dir, ["validation_list.txt"]):
        first, later, epochs = _audio_rates(speech_dir, args.clips, options)
        print(
            f"\nSpeech Commands layout, ~{args.clips} clips ({speech_dir}), clips/s: wall | per CPU s"
        )
        print(f"  first load (decode + write cache)  {first[0]:9.0f} | {first[1]:9.0f}")
        print(f"  later load (feature cache)         {later[0]:9.0f} | {later[1]:9.0f}")
        print(
            f"  later/first                        {later[0] / first[0]:9.1f}x | {later[1] / first[1]:8.1f}x"
        )
        print(f"  training epochs (features in memory) {epochs[0]:7.0f} | {epochs[1]:9.0f}")

    per_core = after[1]
    print(
        f"\nCores to feed one GPU consuming {args.gpu_images_per_s:.0f} CIFAR images/s: "
        f"{args.gpu_images_per_s:.0f} / {per_core:.0f} per core = "
        f"{int(np.ceil(args.gpu_images_per_s / per_core))}"
    )


if __name__ == "__main__":
    main()
