"""`finetune`: recover the accuracy a pruned model lost, with the training recipe at a lower rate.

The recipe is the runner's (`keras_topo.training_recipe`): SGD with momentum, weight decay
(coupled, as torch's SGD, by default) and a cosine decay of the learning rate, here from a tenth
of the training rate and without warm-up (the weights are already trained).
"""

import math

import keras

from keras_topo import training_recipe
from keras_topo.conversion import strip_topography

LEARNING_RATE = training_recipe.LEARNING_RATE / 10


def finetune(
    model,
    train_data,
    epochs,
    *,
    learning_rate=LEARNING_RATE,
    keep_topography=True,
    validation_data=None,
    batch_size=training_recipe.BATCH_SIZE,
    steps_per_epoch=None,
    momentum=training_recipe.MOMENTUM,
    weight_decay=training_recipe.WEIGHT_DECAY,
    weight_decay_mode="coupled",
    warmup_fraction=0.0,
    loss=None,
    jit_compile=False,
    callbacks=(),
    verbose="auto",
):
    """Trains `model` (e.g. `prune_channels(..., mode="remove")`'s) for `epochs`; returns it.

    A `mode="mask"` model would regrow its zeroed filters: fine-tune the removed one.

    Args:
        model: a keras.Model with logits out (or give `loss`).
        train_data: `(x, y)` arrays (batched by `batch_size`), or a batched dataset of
            `(x, y)` that `model.fit` takes (`tf.data.Dataset`, `keras.utils.PyDataset`, ...).
        epochs: positive int.
        learning_rate: peak of the cosine schedule (default: the recipe's / 10).
        keep_topography: True trains with the model's topographic losses; False fine-tunes
            `keras_topo.strip_topography(model)` (a plain copy) instead.
        validation_data: passed to `fit`.
        steps_per_epoch: batches per epoch when `train_data` has no length.
        momentum: as `keras_topo.training_recipe.make_optimizer`.
        weight_decay: as `keras_topo.training_recipe.make_optimizer`.
        weight_decay_mode: as `keras_topo.training_recipe.make_optimizer`.
        warmup_fraction: as `keras_topo.training_recipe.make_optimizer`.
        loss: default `SparseCategoricalCrossentropy(from_logits=True)`.

    Returns:
        The fine-tuned model (`model` itself, or its stripped copy); `model.history` holds
        the per-epoch metrics.
    """
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}.")
    if not keep_topography:
        model = strip_topography(model)
    if isinstance(train_data, (tuple, list)):
        x, y = train_data
        fit_kwargs = {"x": x, "y": y, "batch_size": batch_size}
        steps = math.ceil(len(x) / batch_size)
    else:
        fit_kwargs = {"x": train_data}
        steps = steps_per_epoch or _length(train_data)
    optimizer = training_recipe.make_optimizer(
        steps,
        int(epochs),
        learning_rate=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
        weight_decay_mode=weight_decay_mode,
        warmup_fraction=warmup_fraction,
    )
    model.compile(
        optimizer=optimizer,
        loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    model.fit(
        **fit_kwargs,
        epochs=int(epochs),
        steps_per_epoch=steps_per_epoch,
        validation_data=validation_data,
        callbacks=list(callbacks),
        verbose=verbose,
    )
    return model


def _length(data):
    """Batches per epoch of a dataset, for the learning-rate schedule."""
    try:
        length = len(data)
    except TypeError:
        length = 0  # An infinite or unknown-length dataset.
    if length < 1:
        raise ValueError(
            "train_data has no known number of batches; pass steps_per_epoch (the schedule "
            "needs it)."
        )
    return length
