"""Structured pruning of a small ViT and of keras-hub's MiT: parameter, MAC and CPU latency ratios.

A plain-Keras ViT on 32x32x3 images: a 4x4 patch-embedding conv (64 tokens of width 192),
6 pre-norm blocks of `MultiHeadAttention` (6 heads of 32) and a GELU MLP (768 units), each
added to the residual stream, a final LayerNormalization, mean-pooled logits. Pruned with
`prune_channels(mode="remove")` at fractions 0.25 / 0.5 / 0.75 of every block's heads and MLP
hidden units (`layers=` the attention layers and the MLPs' first Dense: two groups per block),
then at 0.5 with the residual width too (`layers=` also the patch embedding, whose group is the
whole residual stream). `|remove - mask|` is the largest output difference between the
removed and the masked model (the same function where no LayerNormalization spans the pruned
channels: heads and MLP units, not the residual width).

`--model mit`: keras-hub's MiT-B0 (SegFormer's encoder: widths 32/64/160/256, 1/2/5/8 heads, two
blocks per stage, built from its constructor with random weights; needs the `hub` extra) on
128x128 images, mean-pooled logits. Its attention is a custom layer of raw ops: a reshape splits
each query/key/value Dense into heads (`keras_topo.pruning.head_axis`), so `head_layers(model)`
selects them; its MLP units are each MixFFN's first Dense. Fractions 0.25 and 0.5 (0.75 would
leave no head in the 2-head stage, and is refused). The 1-head stage has no head to prune.

Latencies: `predict_on_batch`, pruned
and unpruned timed interleaved in the same run, median of `--repeats` (wall clock, from
`keras_topo.pruning.compare`, and CPU seconds of the process: on a shared machine the CPU time
tracks the work done while wall-clock time also counts waiting for the cores).

    KERAS_BACKEND=tensorflow python benchmarks/bench_pruning_transformer.py [--model mit]
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_topo.pruning import compare, head_layers, prune_channels  # noqa: E402

FRACTIONS = {"vit": (0.25, 0.5, 0.75), "mit": (0.25, 0.5)}


def small_vit(width=192, heads=6, blocks=6, mlp_ratio=4, patch=4, classes=10):
    images = keras.Input((32, 32, 3))
    tokens = keras.layers.Conv2D(width, patch, strides=patch, name="patch_embed")(images)
    h = keras.layers.Reshape((-1, width))(tokens)
    for b in range(blocks):
        y = keras.layers.LayerNormalization(epsilon=1e-6, name=f"block{b}_ln1")(h)
        y = keras.layers.MultiHeadAttention(heads, width // heads, name=f"block{b}_attention")(y, y)
        h = keras.layers.Add()([h, y])
        y = keras.layers.LayerNormalization(epsilon=1e-6, name=f"block{b}_ln2")(h)
        y = keras.layers.Dense(width * mlp_ratio, activation="gelu", name=f"block{b}_mlp1")(y)
        h = keras.layers.Add()([h, keras.layers.Dense(width, name=f"block{b}_mlp2")(y)])
    h = keras.layers.LayerNormalization(epsilon=1e-6, name="final_ln")(h)
    logits = keras.layers.Dense(classes, name="classifier")(
        keras.layers.GlobalAveragePooling1D()(h)
    )
    return keras.Model(images, logits, name="small_vit")


def mit_b0(side=128, classes=10):
    import keras_hub

    backbone = keras_hub.models.MiTBackbone(
        layerwise_depths=[2, 2, 2, 2],
        num_layers=4,
        hidden_dims=[32, 64, 160, 256],
        layerwise_num_heads=[1, 2, 5, 8],
        layerwise_sr_ratios=[8, 4, 2, 1],
        max_drop_path_rate=0.1,
        layerwise_patch_sizes=[7, 3, 3, 3],
        layerwise_strides=[4, 2, 2, 2],
        image_shape=(side, side, 3),
    )
    images = keras.Input((side, side, 3))
    features = keras.layers.GlobalAveragePooling2D()(backbone(images))
    return keras.Model(images, keras.layers.Dense(classes)(features), name="mit_b0")


def vit_heads_and_mlp(model):
    return lambda layer: (
        isinstance(layer, keras.layers.MultiHeadAttention) or layer.name.endswith("_mlp1")
    )


def vit_with_residual(model):
    return lambda layer: vit_heads_and_mlp(model)(layer) or layer.name == "patch_embed"


def mit_heads_and_mlp(model):
    """`head_layers` (one projection per stage of raw-op attention) and the MixFFNs' fc1."""
    mlp = [layer.fc1 for layer in model._flatten_layers() if type(layer).__name__ == "MixFFN"]
    return head_layers(model) + mlp


def mit_heads(model):
    return head_layers(model)


MODELS = {  # builder, then (label, fraction or None for every fraction, layers from the model)
    "vit": (
        small_vit,
        [("heads + MLP", None, vit_heads_and_mlp), ("+ residual width", 0.5, vit_with_residual)],
    ),
    "mit": (mit_b0, [("heads", 0.5, mit_heads), ("heads + MLP", None, mit_heads_and_mlp)]),
}


def sample(model, n, seed):
    shape = (n, *model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def remove_vs_mask(model, fraction, layers):
    x = sample(model, 4, seed=1)
    removed = prune_channels(model, fraction, layers=layers)
    masked = prune_channels(model, fraction, layers=layers, mode="mask")
    gap = np.abs(removed.predict_on_batch(x) - masked.predict_on_batch(x)).max()
    return removed, float(gap)


def cpu_time_ratio(model, pruned, batch_size, repeats):
    """Median CPU seconds of `predict_on_batch`, pruned / unpruned, timed interleaved."""
    x = sample(model, batch_size, seed=0)
    times = {id(model): [], id(pruned): []}
    for m in (model, pruned):
        m.predict_on_batch(x)  # warm-up
    for _ in range(repeats):
        for m in (model, pruned):
            start = time.process_time()
            m.predict_on_batch(x)
            times[id(m)].append(time.process_time() - start)
    return float(np.median(times[id(pruned)]) / np.median(times[id(model)]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", choices=sorted(MODELS), default="vit")
    args = parser.parse_args()
    build, selections = MODELS[args.model]
    model = build()
    print(
        f"model={model.name} backend={keras.backend.backend()} batch={args.batch_size} "
        f"repeats={args.repeats} params={model.count_params():,}"
    )
    print(
        f"{'pruned':16} {'fraction':>8} {'params':>7} {'MACs':>7} {'latency':>8} "
        f"{'lat/MACs':>8} {'CPU time':>8} {'|remove - mask|':>15}"
    )
    rows = [
        (label, f, select(model))
        for label, fraction, select in selections
        for f in ((fraction,) if fraction else FRACTIONS[args.model])
    ]
    for label, fraction, layers in rows:
        pruned, gap = remove_vs_mask(model, fraction, layers)
        r = compare(model, pruned, batch_size=args.batch_size, repeats=args.repeats)
        cpu = cpu_time_ratio(model, pruned, args.batch_size, args.repeats)
        print(
            f"{label:16} {fraction:8.2f} {r['params_ratio']:7.3f} {r['macs_ratio']:7.3f} "
            f"{r['latency_ratio']:8.3f} {r['latency_ratio'] / r['macs_ratio']:8.2f} {cpu:8.3f} {gap:15.2e}",
            flush=True,
        )


if __name__ == "__main__":
    from keras_topo.experiments.fast_path import settings_line

    print(settings_line(), flush=True)  # the backend, oneDNN and thread settings of this run
    main()
