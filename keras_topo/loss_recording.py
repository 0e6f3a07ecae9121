"""Reading each topographic layer's unweighted loss from one eager forward pass.

Training adds the losses with `add_loss` and keeps no state; code that wants the per-layer
values (the `TopographicLossLogger`, metrics, tests) runs the model inside `recording()`:

    with recording() as losses:
        model(x, training=False)
    losses  # {layer name: float32 scalar tensor}

Outside `recording()` the layers record nothing, so training steps pay nothing for it.
"""

import contextlib
import contextvars

from keras_topo.tensor_constants import traced_by_dynamo

_ACTIVE = contextvars.ContextVar("keras_topo_loss_recording", default=None)


@contextlib.contextmanager
def recording():
    """Collects `{layer name: unweighted topographic loss}` of the calls made inside."""
    losses = {}
    token = _ACTIVE.set(losses)
    try:
        yield losses
    finally:
        _ACTIVE.reset(token)


def record(name, loss):
    """Called by the topographic layers with their unweighted loss (no-op when not recording).

    Compiled steps never record: TorchDynamo cannot trace `ContextVar.get` (a graph break).
    """
    if traced_by_dynamo():
        return
    losses = _ACTIVE.get()
    if losses is not None:
        losses[name] = loss
