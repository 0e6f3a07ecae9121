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


def _check_batch_size(batch_size):
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; received {batch_size}.")


def finish(dataset, batch_size, shuffle, seed, size, map_fn=None):
    """Shuffle (whole dataset, reshuffled each epoch), optional seeded map, batch, prefetch.

    `map_fn(x, y, seed)` runs per example after shuffling, with a fresh stateless seed.
    """
    _check_batch_size(batch_size)
    if shuffle:
        dataset = dataset.shuffle(size, seed=seed, reshuffle_each_iteration=True)
    if map_fn is not None:
        dataset = with_seeds(dataset, seed).map(
            lambda xy, s: map_fn(xy[0], xy[1], s), num_parallel_calls=AUTOTUNE
        )
    return dataset.batch(batch_size).prefetch(AUTOTUNE)


def gathered_batches(arrays, batch_size, shuffle, seed, map_fn=None):
    """Batches of rows of in-memory arrays, gathered by index; optional seeded map per batch.

    tf.data handles one int64 index per example and one gather per batch, so a batch costs
    about what one example costs in a per-example pipeline. The order (whole dataset shuffled,
    reshuffled each epoch) is `finish`'s on `from_tensor_slices(arrays)` under the same seed:
    shuffling does not look at the elements.

    Args:
        arrays: tuple of arrays with the same first dimension N.
        map_fn: optional `map_fn(batch, seed) -> batch`, `batch` the tuple of `(B, ...)`
            tensors, `seed` a fresh stateless seed `(2,)` per batch and epoch.

    Returns:
        `tf.data.Dataset` of batches (the last one may be smaller), prefetched.
    """
    _check_batch_size(batch_size)
    tensors = tuple(tf.convert_to_tensor(array) for array in arrays)
    count = len(arrays[0])
    indices = tf.data.Dataset.range(count)
    if shuffle:
        indices = indices.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    indices = indices.batch(batch_size)

    def gather(batch_indices):
        return tuple(tf.gather(tensor, batch_indices) for tensor in tensors)

    if map_fn is None:
        batches = indices.map(gather, num_parallel_calls=AUTOTUNE)
    else:
        batches = with_seeds(indices, seed).map(
            lambda i, s: map_fn(gather(i), s), num_parallel_calls=AUTOTUNE
        )
    return batches.prefetch(AUTOTUNE)
