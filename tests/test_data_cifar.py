"""CIFAR pipelines on tiny generated fixtures in both formats (python pickles, image folder)."""

import os
import pickle

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_topo.data import DataError, cifar, cifar_classes, image_augment, load, pipeline
from keras_topo.data.cifar import MEAN, STD

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PER_CLASS = 2  # 20 training images, 10 test images
N = PER_CLASS * len(CLASSES)


def _images(n, seed):
    """`n` random images whose label (index % 10) is written in the red channel's first pixel."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(n) % len(CLASSES)
    images[:, 0, 0, 0] = labels * 25
    return images, labels


def _write_pickle(path, images, labels):
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    with open(path, "wb") as f:
        pickle.dump({b"data": data, b"labels": [int(v) for v in labels]}, f, protocol=2)


@pytest.fixture
def pickle_dir(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    images, labels = _images(N, seed=1)
    for i, chunk in enumerate(np.array_split(np.arange(len(labels)), 5), start=1):
        _write_pickle(root / f"data_batch_{i}", images[chunk], labels[chunk])
    test_images, test_labels = _images(len(CLASSES), seed=2)
    _write_pickle(root / "test_batch", test_images, test_labels)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES]}, f, protocol=2)
    return str(tmp_path), images, labels


@pytest.fixture
def folder_dir(tmp_path):
    images, labels = _images(N, seed=1)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = tmp_path / "train" / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        tf.io.write_file(str(folder / f"{i:04d}.png"), tf.io.encode_png(image))
    return str(tmp_path)


def _collect(dataset):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def _pixels(normalised):
    """Back to uint8 pixel values, computed independently of the pipeline."""
    return np.rint((normalised * np.array(STD) + np.array(MEAN)) * 255).astype(np.int64)


@pytest.mark.tf_only
@pytest.mark.parametrize("layout", ["pickle", "folder"])
def test_splits_are_disjoint_normalised_and_labelled(layout, pickle_dir, folder_dir):
    data_dir = pickle_dir[0] if layout == "pickle" else folder_dir
    kw = dict(batch_size=4, validation_size=5)
    x_train, y_train = _collect(cifar(data_dir, split="train", augment=False, **kw))
    x_val, y_val = _collect(cifar(data_dir, split="validation", **kw))
    assert x_train.shape == (N - 5, 32, 32, 3) and x_val.shape == (5, 32, 32, 3)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    pixels = _pixels(np.concatenate([x_train, x_val]))
    # Labels travel with their images (label written in a pixel), and no image is repeated.
    np.testing.assert_array_equal(pixels[:, 0, 0, 0], np.concatenate([y_train, y_val]) * 25)
    original = _images(N, seed=1)[0].reshape(N, -1)
    found = sorted(int(np.argmin(np.abs(original - p.reshape(-1)).sum(1))) for p in pixels)
    assert found == list(range(N))
    assert cifar_classes(data_dir) == CLASSES


@pytest.mark.tf_only
def test_validation_split_is_fixed_across_seeds_and_formats(pickle_dir, folder_dir):
    def val_images(data_dir, seed):
        return _pixels(
            _collect(
                cifar(data_dir, split="validation", seed=seed, batch_size=8, validation_size=5)
            )[0]
        )

    a, b = val_images(pickle_dir[0], 0), val_images(pickle_dir[0], 3)
    np.testing.assert_array_equal(a, b)
    # Same images held out in both layouts (the folder lists images class by class).
    key = lambda p: p.reshape(len(p), -1).sum(1)  # noqa: E731
    assert sorted(key(a)) == sorted(key(val_images(folder_dir, 0)))


@pytest.mark.tf_only
def test_augmentation_is_a_padded_crop_and_flip_and_seeded(pickle_dir):
    data_dir, images, labels = pickle_dir
    kw = dict(split="train", batch_size=32, validation_size=5, seed=7)
    plain, _ = _collect(cifar(data_dir, augment=False, **kw))
    dataset = cifar(data_dir, **kw)
    epoch1, _ = _collect(dataset)
    epoch2, _ = _collect(dataset)
    again, _ = _collect(cifar(data_dir, **kw))
    np.testing.assert_array_equal(epoch1, again)  # deterministic under a seed
    assert not np.array_equal(epoch1, epoch2)  # new crops/flips/order each epoch
    padded = np.pad(_pixels(plain), [(0, 0), (4, 4), (4, 4), (0, 0)])
    candidates = {
        crop[::, ::-1].tobytes() if flip else crop.tobytes()
        for image in padded
        for dy in range(9)
        for dx in range(9)
        for flip in (False, True)
        for crop in [image[dy : dy + 32, dx : dx + 32]]
    }
    assert all(p.tobytes() in candidates for p in _pixels(epoch1))


@pytest.mark.tf_only
def test_bad_inputs_raise_clear_errors(tmp_path, folder_dir):
    with pytest.raises(DataError, match="download=True"):
        cifar(str(tmp_path / "nothing"))
    with pytest.raises(DataError, match="no test folder"):
        cifar(folder_dir, split="test")
    with pytest.raises(DataError, match="expected 100"):
        cifar(folder_dir, dataset="cifar100")
    with pytest.raises(ValueError, match="`split`"):
        cifar(folder_dir, split="valid")
    broken = os.path.join(folder_dir, "train", "cat", "broken.png")
    with open(broken, "wb") as f:
        f.write(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png"):
        cifar(folder_dir, validation_size=2)
    x, _ = _collect(cifar(folder_dir, validation_size=2, on_error="skip", augment=False))
    assert len(x) == N + 1 - 2 - 1  # the broken file was in train or validation: skipped
    os.remove(broken)
    for name in os.listdir(os.path.join(folder_dir, "train", "dog")):
        os.remove(os.path.join(folder_dir, "train", "dog", name))
    with pytest.raises(DataError, match="dog: empty class folder"):
        cifar(folder_dir, validation_size=2)


@pytest.mark.tf_only
def test_test_split_and_subset(pickle_dir):
    x, y = _collect(cifar(pickle_dir[0], split="test", batch_size=4))
    np.testing.assert_array_equal(y, np.arange(len(CLASSES)))
    x, y = _collect(cifar(pickle_dir[0], split="train", validation_size=5, subset=4))
    assert len(y) == 4


def test_cifar_feeds_model_fit(pickle_dir):
    info = load("cifar10", pickle_dir[0], batch_size=4, subset=8, validation_size=5)
    assert info.input_shape == (32, 32, 3) and info.num_classes == 10
    model = keras.Sequential(
        [
            keras.Input(info.input_shape),
            keras.layers.Conv2D(2, 3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(info.num_classes),
        ]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(info.dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.tf_only
def test_hidden_folders_and_files_are_ignored(folder_dir):
    checkpoints = os.path.join(folder_dir, "train", ".ipynb_checkpoints")
    os.makedirs(checkpoints)
    with open(os.path.join(folder_dir, "train", "cat", "._0003.png"), "wb") as f:
        f.write(b"macOS resource fork")  # not an image
    assert cifar_classes(folder_dir) == CLASSES
    _, y = _collect(cifar(folder_dir, validation_size=2, augment=False))
    assert len(y) == N - 2


@pytest.mark.tf_only
def test_a_broken_symlink_is_named_or_skipped(folder_dir):
    link = os.path.join(folder_dir, "train", "dog", "gone.png")
    os.symlink(os.path.join(folder_dir, "nowhere.png"), link)
    with pytest.raises(DataError, match="gone.png: unreadable \\(a broken symbolic link"):
        cifar(folder_dir, validation_size=1, split_seed=3)
    _, y_train = _collect(cifar(folder_dir, validation_size=1, on_error="skip", augment=False))
    _, y_val = _collect(cifar(folder_dir, "cifar10", "validation", validation_size=1))
    assert len(y_train) + len(y_val) == N


def test_crop_flip_matches_a_numpy_oracle():
    rng = np.random.default_rng(3)
    images = rng.integers(1, 256, size=(5, 6, 7, 2), dtype=np.uint8)
    offsets = np.array([[0, 0], [8, 8], [3, 5], [8, 0], [1, 7]], np.int32)
    flips = np.array([False, True, True, False, True])
    out = image_augment.crop_flip(images, offsets, flips).numpy()
    padded = np.pad(images, [(0, 0), (4, 4), (4, 4), (0, 0)])
    for image, (y, x), flip, got in zip(padded, offsets, flips, out, strict=True):
        crop = image[y : y + 6, x : x + 7]
        np.testing.assert_array_equal(got, crop[:, ::-1] if flip else crop)


def test_random_crop_flip_draws_every_offset_and_flips_half():
    """Positions written in the pixels give back each crop's offsets and flip."""
    size, count = 8, 4000
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), -1) + 1
    images = np.broadcast_to(grid, (count, size, size, 2)).astype(np.int32)
    seed = tf.constant([5, 6], tf.int64)
    out = image_augment.random_crop_flip(images, seed).numpy()
    np.testing.assert_array_equal(out, image_augment.random_crop_flip(images, seed).numpy())
    rows, columns = out[..., 0].max(axis=2), out[..., 1].max(axis=1)  # (count, size) each
    first_row = np.argmax(rows > 0, axis=1)  # crop row showing the image's first row
    dy = 4 - first_row + rows[np.arange(count), first_row] - 1
    shown = np.where(columns > 0, columns, np.nan)  # zero columns are padding
    flipped = np.nanargmax(shown, axis=1) < np.nanargmin(shown, axis=1)  # columns reversed
    unflipped = np.where(flipped[:, None], columns[:, ::-1], columns)
    first_column = np.argmax(unflipped > 0, axis=1)
    dx = 4 - first_column + unflipped[np.arange(count), first_column] - 1
    counts = np.bincount(dy * 9 + dx, minlength=81)
    assert counts.size == 81 and counts.min() >= 25 and counts.max() <= 75  # 49.4 each
    assert 0.45 < flipped.mean() < 0.55


def test_gathered_batches_keep_the_per_example_order():
    values = np.arange(50)
    per_example = pipeline.finish(tf.data.Dataset.from_tensor_slices(values), 8, True, 4, 50)
    gathered = pipeline.gathered_batches((values,), 8, True, 4)
    for _ in range(2):  # reshuffled each epoch, the same way
        expected = np.concatenate([x.numpy() for x in per_example])
        np.testing.assert_array_equal(np.concatenate([x.numpy() for (x,) in gathered]), expected)
    with pytest.raises(ValueError, match="batch_size"):
        pipeline.gathered_batches((values,), 0, True, 4)
