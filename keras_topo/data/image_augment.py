"""The reference's CIFAR augmentation on whole batches: zero-pad 4, random 32x32 crop, flip.

One call per batch instead of one per image: tf.data's per-element overhead, not the pixel
work, is what limits a per-image `map` on CIFAR's tiny images.
"""

import tensorflow as tf

PAD = 4


def crop_flip(images, offsets, flips):
    """Crops of the zero-padded images at given offsets, mirrored left-right where asked.

    Args:
        images: `(B, H, W, C)` tensor, any dtype.
        offsets: int32 `(B, 2)`: top and left corner of each crop in the image padded by
            `PAD` on each side, in `[0, 2 * PAD]`.
        flips: bool `(B,)`: mirror the crop left-right.

    Returns:
        `(B, H, W, C)` tensor of the same dtype: `flip(pad(image)[y : y + H, x : x + W])`.
    """
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    padded = tf.pad(images, [[0, 0], [PAD, PAD], [PAD, PAD], [0, 0]])
    rows = offsets[:, :1] + tf.range(height)[tf.newaxis]
    columns = offsets[:, 1:] + tf.range(width)[tf.newaxis]
    columns = tf.where(flips[:, tf.newaxis], tf.reverse(columns, [1]), columns)
    rows_kept = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(rows_kept, columns, axis=2, batch_dims=1)


def random_crop_flip(images, seed):
    """`crop_flip` with uniform offsets in `[0, 2 * PAD]` and flips of probability 1/2.

    Args:
        images: `(B, H, W, C)` tensor.
        seed: int `(2,)` stateless seed; the same seed gives the same crops and flips.
    """
    offset_seed, flip_seed = tf.unstack(tf.random.split(seed, 2))
    batch = tf.shape(images)[:1]
    offsets = tf.random.stateless_uniform(
        tf.concat([batch, [2]], 0), offset_seed, maxval=2 * PAD + 1, dtype=tf.int32
    )
    flips = tf.random.stateless_uniform(batch, flip_seed) < 0.5
    return crop_flip(images, offsets, flips)
