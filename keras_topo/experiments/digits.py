"""`digits`: scikit-learn's 1,797 handwritten digits as a tiny built-in dataset.

Real 8x8 grayscale scans (values 0..16) shipped inside scikit-learn, so no download. Images are
upsampled to 16x16 (nearest neighbour, so that ResNet-18's four stride-2 stages keep a 2x2 map)
and scaled to [0, 1]. The train/val/test split (70/15/15 %, stratified) is fixed by
`SPLIT_SEED`, independent of the run's seed, as the paper fixes CIFAR's 45,000/5,000 split.
"""

import numpy as np

SPLITS = ("train", "validation", "test")
SPLIT_SEED = 1234
NUM_CLASSES = 10
UPSAMPLE = 2
INPUT_SHAPE = (8 * UPSAMPLE, 8 * UPSAMPLE, 1)


def arrays(split):
    """Images `(N, 16, 16, 1)` float32 in [0, 1] and labels `(N,)` int32 of one split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    digits = load_digits()
    images = digits.images.astype("float32") / 16.0
    images = images.repeat(UPSAMPLE, axis=1).repeat(UPSAMPLE, axis=2)[..., None]
    labels = digits.target.astype("int32")
    index = np.arange(len(labels))
    train, rest = train_test_split(index, test_size=0.3, random_state=SPLIT_SEED, stratify=labels)
    val, test = train_test_split(
        rest, test_size=0.5, random_state=SPLIT_SEED, stratify=labels[rest]
    )
    chosen = {"train": train, "validation": val, "test": test}[split]
    return images[chosen], labels[chosen]


def load(split, batch_size, seed=0, subset=None):
    """A batched `tf.data.Dataset` of `(image, label)`; the train split is shuffled by `seed`.

    `subset` keeps the split's first `subset` examples.
    """
    import tensorflow as tf

    images, labels = arrays(split)
    if subset is not None:
        images, labels = images[:subset], labels[:subset]
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if split == "train":
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
