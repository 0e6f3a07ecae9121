"""PNG figures (matplotlib `Figure` objects, no pyplot state, so no display is needed).

- `plot_position_schemes`: the six position schemes (paper Fig. 2).
- `layer_statistics`, `similarity_by_distance`, `plot_topography`: topography of a trained
  layer (similarity vs distance; preferred class per channel at its position).
- `plot_pruning_curves`: accuracy vs pruned fraction (paper Fig. 3).
- `draw_run_figures`: all of them for trained run folders (what `keras-topo figures` does).
- `plot_selectivity_maps`, `plot_similarity_curves`, `draw_map_figures`: every topographic
  layer's map from the scores a run recorded (`keras_topo.metrics`), with chance bands.
"""

from keras_topo.figures.maps import (
    draw_map_figures,
    plot_selectivity_maps,
    plot_similarity_curves,
)
from keras_topo.figures.pruning_curve import plot_pruning_curves
from keras_topo.figures.runs import draw_run_figures
from keras_topo.figures.schemes import plot_position_schemes
from keras_topo.figures.topography import (
    layer_statistics,
    plot_topography,
    similarity_by_distance,
)

__all__ = [
    "draw_map_figures",
    "draw_run_figures",
    "layer_statistics",
    "plot_position_schemes",
    "plot_pruning_curves",
    "plot_selectivity_maps",
    "plot_similarity_curves",
    "plot_topography",
    "similarity_by_distance",
]
