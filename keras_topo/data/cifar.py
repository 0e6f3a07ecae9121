"""CIFAR-10 / CIFAR-100 as `tf.data` pipelines with the reference's augmentation.

Two on-disk formats under `data_dir`:
- the official python archive: `cifar-10-batches-py/` or `cifar-100-python/` (what
  `keras.datasets` downloads; `download=True` fetches it into `data_dir`);
- an image folder: `train/<class>/*.png|jpg` and optionally `test/<class>/...`
  (class folders sorted alphabetically give the label ids).
The training split is a fixed, seeded (`split_seed`) 45,000/5,000 train/validation split of the
50,000 training images; "test" is the official test set.
"""

import os
import pickle

import numpy as np
import tensorflow as tf

from keras_topo.data import download as download_lib
from keras_topo.data import image_augment, pipeline
from keras_topo.data.errors import BadFiles, DataError

SPLITS = ("train", "validation", "test")
# The reference code's normalisation (used for both CIFAR-10 and CIFAR-100).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

_ARCHIVES = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "sha256": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": ("batches.meta", b"label_names"),
        "labels": b"labels",
        "num_classes": 10,
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "sha256": "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
        "train": ["train"],
        "test": ["test"],
        "meta": ("meta", b"fine_label_names"),
        "labels": b"fine_labels",
        "num_classes": 100,
    },
}


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles only numpy arrays (the CIFAR files hold nothing else): no code execution."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path):
    try:
        with open(path, "rb") as f:
            return _NumpyUnpickler(f, encoding="bytes").load()
    except FileNotFoundError as error:
        raise DataError(f"{path}: file not found (incomplete CIFAR archive?)") from error
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise DataError(f"{path}: unreadable CIFAR pickle ({error})") from error


def _check_dataset(dataset):
    if dataset not in _ARCHIVES:
        raise ValueError(f"`dataset` must be one of {tuple(_ARCHIVES)}; received {dataset!r}.")
    return _ARCHIVES[dataset]


def _source(data_dir, dataset, download):
    """("pickle", folder) or ("folder", data_dir); downloads the archive if asked."""
    spec = _check_dataset(dataset)
    for folder in (os.path.join(data_dir, spec["folder"]), data_dir):
        if os.path.isfile(os.path.join(folder, spec["meta"][0])):
            return "pickle", folder
    if os.path.isdir(os.path.join(data_dir, "train")):
        return "folder", data_dir
    if download:
        download_lib.fetch_and_extract(spec["url"], spec["sha256"], data_dir)
        return "pickle", os.path.join(data_dir, spec["folder"])
    raise DataError(
        f"No {dataset} data under {data_dir!r}: expected {spec['folder']}/ (the python "
        f"version from {spec['url']}, unpacked there) or train/<class>/*.png|jpg. "
        "Pass download=True to fetch the archive."
    )


def cifar_classes(data_dir, dataset="cifar10", download=False):
    """Class names of a CIFAR dataset in label order; `len()` of it is `num_classes`."""
    spec = _check_dataset(dataset)
    kind, root = _source(data_dir, dataset, download)
    if kind == "pickle":
        meta_file, key = spec["meta"]
        return [name.decode() for name in _unpickle(os.path.join(root, meta_file))[key]]
    train = os.path.join(root, "train")
    names = sorted(
        d
        for d in os.listdir(train)
        if os.path.isdir(os.path.join(train, d)) and not d.startswith(".")  # .ipynb_checkpoints
    )
    if len(names) != spec["num_classes"]:
        raise DataError(
            f"{train}: found {len(names)} class folders, expected {spec['num_classes']} for "
            f"{dataset}; pass the matching `dataset`."
        )
    return names


def _read_pickles(root, files, labels_key):
    images, labels = [], []
    for name in files:
        batch = _unpickle(os.path.join(root, name))
        images.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[labels_key], np.int32))
    return np.concatenate(images).transpose(0, 2, 3, 1), np.concatenate(labels)


def _list_images(split_dir, class_names):
    paths, labels = [], []
    for label, name in enumerate(class_names):
        folder = os.path.join(split_dir, name)
        if not os.path.isdir(folder):
            raise DataError(f"{folder}: class folder missing (classes come from train/)")
        files = sorted(
            f
            for f in os.listdir(folder)
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")
        )
        if not files:
            raise DataError(f"{folder}: empty class folder (no .png/.jpg images)")
        paths += [os.path.join(folder, f) for f in files]
        labels += [label] * len(files)
    return paths, np.asarray(labels, np.int32)


def _decode_images(paths, on_error):
    """Decodes image files to a uint8 array (N, 32, 32, 3) and the indices kept."""

    def decode(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return tf.ensure_shape(image, [32, 32, 3])

    try:
        fast = tf.data.Dataset.from_tensor_slices(paths).map(decode, pipeline.AUTOTUNE)
        return np.concatenate(list(fast.batch(4096).as_numpy_iterator())), None
    except (tf.errors.OpError, ValueError):
        pass  # Find the culprits one by one, to name them.
    bad_files, images, kept = BadFiles(on_error), [], []
    for index, path in enumerate(paths):
        if not os.path.isfile(path):
            bad_files.report(DataError(f"{path}: unreadable (a broken symbolic link?)"))
            continue
        try:
            images.append(decode(path).numpy())
            kept.append(index)
        except (tf.errors.OpError, ValueError) as error:
            message = getattr(error, "message", str(error))
            bad_files.report(DataError(f"{path}: not a 32x32 PNG/JPEG image ({message})"))
    bad_files.log_summary("CIFAR images")
    if not images:
        raise DataError(f"No readable image among the {len(paths)} files (e.g. {paths[0]})")
    return np.stack(images), np.asarray(kept)


def _load_split(data_dir, dataset, split, validation_size, split_seed, download):
    spec = _check_dataset(dataset)
    kind, root = _source(data_dir, dataset, download)
    part = "test" if split == "test" else "train"
    if kind == "pickle":
        images, labels = _read_pickles(root, spec[part], spec["labels"])
        sources = None
    else:
        split_dir = os.path.join(root, part)
        if not os.path.isdir(split_dir):
            raise DataError(
                f"{split_dir}: no test folder in this image-folder copy of {dataset}; "
                "use split='validation' (held out of train) or the official archive."
            )
        sources, labels = _list_images(split_dir, cifar_classes(data_dir, dataset))
        images = None
    if part == "train":
        count = len(labels)
        if not 0 < validation_size < count:
            raise ValueError(
                f"`validation_size` must be in (0, {count}); received {validation_size}."
            )
        order = np.random.default_rng(split_seed).permutation(count)
        chosen = np.sort(
            order[:validation_size] if split == "validation" else order[validation_size:]
        )
    else:
        chosen = np.arange(len(labels))
    return images, sources, labels, chosen


def cifar_arrays(
    data_dir,
    dataset="cifar10",
    split="train",
    validation_size=5000,
    subset=None,
    download=False,
    split_seed=0,
    on_error="raise",
):
    """The decoded images and labels of a split, in memory (arguments as in `cifar`).

    Returns:
        `(images, labels)`: uint8 `(N, 32, 32, 3)` and int32 `(N,)`.
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}; received {split!r}.")
    images, sources, labels, chosen = _load_split(
        data_dir, dataset, split, validation_size, split_seed, download
    )
    chosen = chosen[pipeline.subset_indices(len(chosen), subset, split_seed)]
    labels = labels[chosen]
    if images is None:
        images, kept = _decode_images([sources[i] for i in chosen], on_error)
        labels = labels if kept is None else labels[kept]
    else:
        images = images[chosen]
    return images, labels


def cifar(
    data_dir,
    dataset="cifar10",
    split="train",
    batch_size=128,
    seed=0,
    validation_size=5000,
    subset=None,
    augment=None,
    cache=False,
    download=False,
    split_seed=0,
    on_error="raise",
):
    """CIFAR as a `tf.data.Dataset` of `(images, labels)` batches.

    Args:
        data_dir: folder holding the official python archive or an image folder (see module).
        dataset: "cifar10" or "cifar100".
        split: "train" (45,000 images), "validation" (the 5,000 held out of the training set)
            or "test".
        batch_size: examples per batch (the last batch may be smaller).
        seed: shuffling and augmentation seed (the order is deterministic under it).
        validation_size: images held out of the 50,000 for validation.
        subset: optional number of examples: a random sample of the split (`split_seed`).
        augment: random crop 32x32 after zero-padding 4 and horizontal flip p=0.5, drawn
            for a whole batch at once from one stateless seed per batch and epoch;
            defaults to True for "train" only.
        cache: without augmentation, normalise the images once and keep them in memory as
            float32 (4x the memory of the uint8 images, which are always held in memory,
            decoded once).
        download: fetch the official archive into `data_dir` when no data is found.
        split_seed: seed of the train/validation split and of `subset` (fixed across runs).
        on_error: "raise" on an unreadable image file, or "skip" it (counted in a log line).

    Returns:
        `tf.data.Dataset` of float32 images `(B, 32, 32, 3)` normalised with the reference's
        per-channel mean and std, and int32 labels `(B,)`.
    """
    images, labels = cifar_arrays(
        data_dir, dataset, split, validation_size, subset, download, split_seed, on_error
    )
    augment = split == "train" if augment is None else augment
    return cifar_pipeline(images, labels, batch_size, split == "train", seed, augment, cache)


def cifar_pipeline(images, labels, batch_size, shuffle, seed, augment, cache=False):
    """Batches of normalised (optionally augmented) images from in-memory arrays.

    Args:
        images: uint8 `(N, 32, 32, 3)`; labels: int32 `(N,)`.
        shuffle: reshuffle the whole set each epoch (order deterministic under `seed`).
        augment, cache: as in `cifar`.

    Returns:
        `tf.data.Dataset` of float32 `(B, 32, 32, 3)` and int32 `(B,)` batches.
    """
    if cache and not augment:
        arrays = (normalise(images).numpy(), labels)
        return pipeline.gathered_batches(arrays, batch_size, shuffle, seed)

    def prepare(batch, batch_seed):
        batch_images, batch_labels = batch
        if augment:
            batch_images = image_augment.random_crop_flip(batch_images, batch_seed)
        return normalise(batch_images), batch_labels

    return pipeline.gathered_batches((images, labels), batch_size, shuffle, seed, prepare)


def normalise(images):
    """uint8 images `(..., 3)` to float32 scaled to [0, 1], minus `MEAN`, over `STD`."""
    return (tf.cast(images, tf.float32) / 255.0 - tf.constant(MEAN)) / tf.constant(STD)
