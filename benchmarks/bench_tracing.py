"""Seconds to see through a keras-hub MobileNetV3's custom blocks: pruning and make_topographic.

The backbone is keras-hub's own `MobileNetBackbone` docstring example (a MobileNetV3-small-like
network: 10 inverted residual blocks, squeeze-and-excitation, hard swish; 224 x 224 inputs, random
weights, built from its constructor) under `Input -> backbone -> pooling -> Dense(10)`. Every
custom block is re-traced (`keras_topo.tracing`, including each trace's numerical check) inside
the timed call: each step starts from a freshly built model, with the tracing caches and numerical
verdicts cleared (`tracing.clear_caches`) and the garbage of earlier models collected.

- prune: `prune_channels(model, 0.5, layers=<every Conv2D that makes channels>)`, remove mode
  (issue target: <= 3 s on this CPU), and its params ratio;
- make_topographic: defaults (issue target: <= 2 s), convs made topographic / Conv2D with >= 3
  filters;
- each in CPU seconds of this process (`time.process_time`: the figure to compare on a machine
  shared with other jobs) and wall seconds, with the 1-minute load average;
- the ratio of each to one plain forward pass of a batch of 8, measured in the same run.

    KERAS_BACKEND=tensorflow python benchmarks/bench_tracing.py
"""

import gc
import os
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

import keras_topo  # noqa: E402
from keras_topo import tracing  # noqa: E402
from keras_topo.layer_selection import is_topographic, walk_layers  # noqa: E402
from keras_topo.pruning import prune_channels  # noqa: E402


def mobilenet_v3(side=224):
    backbone = keras_hub.models.MobileNetBackbone(
        stackwise_expansion=[[40, 56], [64, 144, 144], [72, 72], [144, 288, 288]],
        stackwise_num_blocks=[2, 3, 2, 3],
        stackwise_num_filters=[[16, 16], [24, 24, 24], [24, 24], [48, 48, 48]],
        stackwise_kernel_size=[[3, 3], [5, 5, 5], [5, 5], [5, 5, 5]],
        stackwise_num_strides=[[2, 1], [2, 1, 1], [1, 1], [2, 1, 1]],
        stackwise_se_ratio=[[None, None], [0.25] * 3, [0.3, 0.3], [0.3, 0.25, 0.25]],
        stackwise_activation=[["relu"] * 2] + [["hard_swish"] * n for n in (3, 2, 3)],
        stackwise_padding=[[1, 1], [2, 2, 2], [2, 2], [2, 2, 2]],
        output_num_filters=288,
        depthwise_filters=8,
        depthwise_stride=2,
        depthwise_residual=False,
        squeeze_and_excite=0.5,
        last_layer_filter=288,
        input_activation="hard_swish",
        output_activation="hard_swish",
        input_num_filters=16,
        image_shape=(side, side, 3),
    )
    inputs = keras.Input((side, side, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def timed(fn):
    """`(fn(), CPU seconds, wall seconds)`, from cold tracing caches and a collected heap."""
    tracing.clear_caches()
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def main():
    x = np.random.default_rng(0).standard_normal((8, 224, 224, 3)).astype("float32")
    model = mobilenet_v3()
    model.predict_on_batch(x)
    _, forward, _ = timed(lambda: model.predict_on_batch(x))

    def makes_channels(layer):
        return type(layer) is keras.layers.Conv2D and layer.groups == 1

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = mobilenet_v3()
        pruned, prune_s, prune_wall = timed(
            lambda: prune_channels(model, 0.5, layers=makes_channels)
        )
        model = mobilenet_v3()
        topographic, topo_s, topo_wall = timed(lambda: keras_topo.make_topographic(model))
    convs = [
        layer
        for layer in walk_layers(model)
        if type(layer) is keras.layers.Conv2D and layer.filters >= 3
    ]
    made = [layer for layer in walk_layers(topographic) if is_topographic(layer)]
    backend = keras.backend.backend()
    print(
        f"keras-hub MobileNetV3 (224 x 224, {model.count_params():,} params), {backend}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"forward pass, batch 8: {forward:.2f} CPU s")
    print(
        f"trace + prune 0.5: {prune_s:.2f} CPU s ({prune_s / forward:.1f} forward passes), "
        f"{prune_wall:.2f} s wall, params ratio "
        f"{pruned.count_params() / model.count_params():.3f}"
    )
    print(
        f"make_topographic: {topo_s:.2f} CPU s ({topo_s / forward:.1f} forward passes), "
        f"{topo_wall:.2f} s wall, {len(made)} topographic / {len(convs)} Conv2D with >= 3 "
        "filters (squeeze-and-excitation convs left out by default)"
    )


if __name__ == "__main__":
    main()
