"""Small tf.data building blocks shared by the loaders."""

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


def subset_indices(count, subset, seed):
    """Sorted indices of a seeded random sample of `subset` out of `count` (all if None)."""
    if subset is None or subset >= count:
        return np.arange(count)
    if subset < 1:
        raise ValueError(f"`subset` must be a positive number of examples; received {subset}.")
    return np.sort(np.random.default_rng(seed).choice(count, size=subset, replace=False))


def with_seeds(dataset, seed):
    """Zips each element with a stateless-op seed `(2,)` int64, new at every epoch."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(dataset, seeds)


def finish(dataset, batch_size, shuffle, seed, size, map_fn=None):
    """Shuffle (whole dataset, reshuffled each epoch), optional seeded map, batch, prefetch.

    `map_fn(x, y, seed)` runs per example after shuffling, with a fresh stateless seed.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; received {batch_size}.")
    if shuffle:
        dataset = dataset.shuffle(size, seed=seed, reshuffle_each_iteration=True)
    if map_fn is not None:
        dataset = with_seeds(dataset, seed).map(
            lambda xy, s: map_fn(xy[0], xy[1], s), num_parallel_calls=AUTOTUNE
        )
    return dataset.batch(batch_size).prefetch(AUTOTUNE)
