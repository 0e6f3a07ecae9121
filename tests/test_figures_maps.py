"""Map figures drawn from the map scores runs record in result.json."""

import json

import numpy as np
from matplotlib import image
from test_metrics import class_images, map_model

from keras_topo.figures.maps import draw_map_figures
from keras_topo.metrics import measure_topography


def write_run(folder, organisation, seed, scores):
    folder.mkdir()
    result = {"status": "complete", "organisation": organisation, "config": {"seed": seed}}
    if scores is not None:
        result["map_scores"] = scores
    (folder / "result.json").write_text(json.dumps(result))
    return folder


def test_selectivity_maps_and_similarity_curves(tmp_path):
    x, y = class_images(60)
    smooth = measure_topography(map_model()[0], x, y, permutations=9, shuffles=10)
    shuffled = measure_topography(map_model(shuffle=True)[0], x, y, permutations=9, shuffles=10)
    runs = [
        write_run(tmp_path / "a", "grid-2d", 0, smooth),
        write_run(tmp_path / "b", "grid-2d", 1, dict(zip(smooth, shuffled.values(), strict=True))),
        write_run(tmp_path / "old", "baseline", 0, None),  # recorded before map scores: skipped
    ]
    paths = draw_map_figures(tmp_path / "figs", runs, class_names=["r", "g", "b"])
    assert [p.name for p in paths] == ["maps-selectivity.png", "maps-similarity.png"]
    maps, curves = (image.imread(p) for p in paths)
    assert maps.shape[0] > maps.shape[1]  # two runs stacked over one layer column
    assert curves.shape[1] > 200 and np.ptp(curves) > 0


def test_no_map_scores_no_figures(tmp_path):
    run = write_run(tmp_path / "old", "baseline", 0, None)
    assert draw_map_figures(tmp_path / "figs", [run]) == []
