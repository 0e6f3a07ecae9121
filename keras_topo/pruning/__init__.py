"""Structural channel pruning of Keras 3 functional models (paper section 3.4, and beyond).

`prune_channels(model, fraction, ...)` prunes output channels of conv layers, either as the
paper does (`mode="mask"`: zeroed filters) or by rebuilding a smaller model with the filters
removed (`mode="remove"`, same outputs). `compare(model_a, model_b)` reports parameters, MACs
and measured latency.
"""

from keras_topo.pruning.cost import (
    compare,
    count_macs,
    count_params,
    format_comparison,
    measure_latency,
)
from keras_topo.pruning.expand_channels import ExpandChannels
from keras_topo.pruning.prune import prune_channels

__all__ = [
    "ExpandChannels",
    "compare",
    "count_macs",
    "count_params",
    "format_comparison",
    "measure_latency",
    "prune_channels",
]
