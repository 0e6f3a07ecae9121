"""The paper's training recipe: SGD + momentum, weight decay, cosine decay after a warm-up.

Pure Keras (a model tool: the runner `keras_topo.experiments.run` and
`keras_topo.pruning.finetune` share it). `keras_topo.experiments.recipe`, its former home, is a
deprecated alias. `TorchSGD` keeps its registered name `keras_topo>TorchSGD`, so `.keras` files
saved before the move load.

Weight decay comes in two forms, and they are not the same regularisation:

- `"coupled"` (default, the paper's: PyTorch's `torch.optim.SGD(weight_decay=wd)`): `wd * w` is
  added to the gradient, then goes through momentum: `b = mu * b + (g + wd * w)`,
  `w -= lr * b`. With momentum 0.9 the decay's steady-state effect is `1 / (1 - mu) = 10x`
  that of the same `wd` applied once per step. `TorchSGD` implements exactly these updates
  (the learning rate multiplies the buffer, as in PyTorch, rather than entering it as in
  `keras.optimizers.SGD`, which matters once the learning rate changes along the schedule).
- `"decoupled"`: `keras.optimizers.SGD(weight_decay=wd)`, which shrinks `w -= lr * wd * w`
  once per step outside the momentum buffer (as in AdamW/SGDW). For a comparable strength
  use about `wd / (1 - momentum)`.
"""

import keras
from keras import ops

LEARNING_RATE = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 0.01
BATCH_SIZE = 256
WARMUP_FRACTION = 0.3
WEIGHT_DECAY_MODES = ("coupled", "decoupled")
# The paper's epochs per dataset; `digits` is this package's small built-in demo dataset.
EPOCHS = {"cifar10": 100, "cifar100": 100, "speechcommands": 12, "birddcase": 36, "digits": 30}


@keras.saving.register_keras_serializable(package="keras_topo")
class TorchSGD(keras.optimizers.Optimizer):
    """SGD with momentum and coupled weight decay, update for update as `torch.optim.SGD`.

    Per trainable variable `w` with gradient `g` (dampening 0, no Nesterov):
    `g' = g + weight_decay * w`; `b = momentum * b + g'` (`b = g'` at the first step);
    `w = w - learning_rate * b`. The decay applies to every trainable variable, as PyTorch's
    does for `model.parameters()`.
    """

    def __init__(
        self,
        learning_rate=LEARNING_RATE,
        momentum=MOMENTUM,
        weight_decay=WEIGHT_DECAY,
        name="torch_sgd",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1), got {momentum}.")
        if float(weight_decay) < 0:
            raise ValueError(f"`weight_decay` must be >= 0, got {weight_decay}.")
        self.momentum = float(momentum)
        # Not `self.weight_decay`: the base class would then also apply the decoupled form.
        self.coupled_weight_decay = float(weight_decay)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.buffers = self.add_optimizer_variables(variables, "momentum_buffer")

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.coupled_weight_decay:
            gradient = gradient + self.coupled_weight_decay * variable
        buffer = self.buffers[self._get_variable_index(variable)]
        # A zero-initialised buffer gives PyTorch's `b = g` at the first step.
        self.assign(buffer, self.momentum * buffer + gradient)
        self.assign_sub(variable, learning_rate * buffer)

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "weight_decay": self.coupled_weight_decay})
        return config


def learning_rate_schedule(
    steps_per_epoch, epochs, learning_rate=LEARNING_RATE, warmup_fraction=WARMUP_FRACTION
):
    """Linear warm-up from 0 over `warmup_fraction` of the steps, then cosine decay to 0.

    Keras' `CosineDecay` with `warmup_target`; the schedule advances per optimizer step.
    """
    if steps_per_epoch < 1 or epochs < 1:
        raise ValueError(
            f"steps_per_epoch and epochs must be >= 1, got {steps_per_epoch} and {epochs}."
        )
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}.")
    total = steps_per_epoch * epochs
    warmup = int(round(warmup_fraction * total))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else learning_rate,
        decay_steps=max(total - warmup, 1),
        warmup_target=learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def make_optimizer(
    steps_per_epoch,
    epochs,
    learning_rate=LEARNING_RATE,
    momentum=MOMENTUM,
    weight_decay=WEIGHT_DECAY,
    weight_decay_mode="coupled",
    warmup_fraction=WARMUP_FRACTION,
):
    """The recipe's optimizer: `TorchSGD` (coupled) or `keras.optimizers.SGD` (decoupled)."""
    schedule = learning_rate_schedule(steps_per_epoch, epochs, learning_rate, warmup_fraction)
    if weight_decay_mode == "coupled":
        return TorchSGD(schedule, momentum=momentum, weight_decay=weight_decay)
    if weight_decay_mode == "decoupled":
        return keras.optimizers.SGD(schedule, momentum=momentum, weight_decay=weight_decay or None)
    raise ValueError(
        f"weight_decay_mode must be one of {WEIGHT_DECAY_MODES}, got {weight_decay_mode!r}."
    )
