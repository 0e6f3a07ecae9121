"""Structural channel pruning of Keras 3 functional and Sequential models.

`prune_channels(model, fraction, ...)` prunes output channels: by default each group of coupled
channels (`channel_groups(model)`: through residual sums, concatenations, depthwise convs,
nested models and raw `keras.ops`) as one unit, or as the paper does, layer by layer
(`coupling="expand"`). `mode="remove"` rebuilds a smaller model, `mode="mask"` zeroes weights;
both compute the same function. `register_handler` teaches the pruner a custom layer;
`head_layers(model)` lists the layers whose selection prunes attention heads;
`compare(model_a, model_b)` reports parameters, MACs and measured latency; `replay(model,
history)` applies a recorded pruning (`PruningReport.history`, JSON) to another checkpoint.
"""

from keras_topo.pruning.attention import head_layers
from keras_topo.pruning.cost import (
    compare,
    count_macs,
    count_params,
    format_comparison,
    measure_latency,
)
from keras_topo.pruning.expand_channels import ExpandChannels
from keras_topo.pruning.finetune import finetune
from keras_topo.pruning.graph import ChannelGroup, channel_groups
from keras_topo.pruning.handlers import (
    ChannelHandler,
    Elementwise,
    Follower,
    Producer,
    register_handler,
)
from keras_topo.pruning.history import PruningHistory, replay
from keras_topo.pruning.prune import prune_channels
from keras_topo.pruning.report import PruningReport

__all__ = [
    "ChannelGroup",
    "ChannelHandler",
    "Elementwise",
    "ExpandChannels",
    "Follower",
    "Producer",
    "PruningHistory",
    "PruningReport",
    "channel_groups",
    "compare",
    "count_macs",
    "count_params",
    "finetune",
    "format_comparison",
    "head_layers",
    "measure_latency",
    "prune_channels",
    "register_handler",
    "replay",
]
