"""The three published topographic objectives, one registry, one entry point.

- "activation": the paper's loss on the cosine similarity of channel outputs
  (`keras_topo.topographic_loss`).
- "weights": TopoLoss (TopoNets, Deb et al. 2025) on the layer kernel
  (`keras_topo.objectives.weight_smoothness`).
- "spatial": TDANN's relative spatial loss (Margalit et al. 2024) on the channels' response
  correlations (`keras_topo.objectives.spatial_correlation`).
"""

from keras_topo.objectives.spatial_correlation import (
    covariance_loss,
    neighbour_table,
    neighbourhood_covariance_loss,
    neighbourhood_spatial_loss,
    sample_neighbourhoods,
    spatial_correlation_loss,
)
from keras_topo.objectives.weight_smoothness import (
    DEFAULT_SHRINK_FACTOR,
    sheet_positions,
    sheet_shape,
    smoothing_matrices,
    validate_shrink_factor,
    weight_smoothness_loss,
)
from keras_topo.topographic_loss import topographic_loss

OBJECTIVES = ("activation", "weights", "spatial")


def validate_objective(objective):
    """`objective` itself if it is one of `OBJECTIVES`, else a ValueError naming them."""
    if objective not in OBJECTIVES:
        raise ValueError(f"Unknown objective {objective!r}: use one of {OBJECTIVES}.")
    return objective


def objective_loss(
    objective,
    outputs,
    kernel,
    target,
    shrink_factor=DEFAULT_SHRINK_FACTOR,
    data_format="channels_last",
    neighbourhoods=None,
):
    """One layer's topographic loss under `objective`, a float32 scalar.

    Args:
        objective: one of `OBJECTIVES`.
        outputs: the layer's pre-activation output, any rank, `(B, ..., C)` (channels_last) or
            `(B, C, ...)` (channels_first). Unused by "weights".
        kernel: the layer kernel `(..., C_in, C_out)`; needed by "weights" only (None in the
            regularizer form, which sees outputs alone).
        target: `(C, C)` numpy `1 / (d + 1)` of the channel positions ("activation",
            "spatial"). "weights" lays the channels on TopoLoss' own row-major sheet instead
            (`sheet_positions(C)`).
        shrink_factor: "weights" only: one number or `(h, w)`, see `validate_shrink_factor`.
        data_format: "channels_last" or "channels_first".
        neighbourhoods: "spatial" only: `(indices, valid)` `(K, M)` of `sample_neighbourhoods`
            (TopoLM's sampled neighbourhoods), or None: all pairs.
    """
    validate_objective(objective)
    if objective == "activation":
        return topographic_loss(outputs, target=target, data_format=data_format)
    if objective == "spatial" and neighbourhoods is not None:
        return neighbourhood_spatial_loss(outputs, target, neighbourhoods, data_format)
    if objective == "spatial":
        return spatial_correlation_loss(outputs, target, data_format=data_format)
    if kernel is None:
        raise ValueError(
            'objective="weights" (TopoLoss) acts on the layer kernel, and none was given: it '
            "cannot be used as an activity regularizer. Use a topographic layer, or "
            'objective="activation" / "spatial".'
        )
    return weight_smoothness_loss(kernel, shrink_factor)


__all__ = [
    "DEFAULT_SHRINK_FACTOR",
    "OBJECTIVES",
    "covariance_loss",
    "neighbour_table",
    "neighbourhood_covariance_loss",
    "neighbourhood_spatial_loss",
    "objective_loss",
    "sample_neighbourhoods",
    "sheet_positions",
    "sheet_shape",
    "smoothing_matrices",
    "spatial_correlation_loss",
    "validate_objective",
    "validate_shrink_factor",
    "weight_smoothness_loss",
]
