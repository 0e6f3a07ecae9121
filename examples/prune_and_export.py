"""Prune a topographic ResNet-18 for real and ship it as a SavedModel.

`mode="remove"` rebuilds a smaller network whose outputs equal the paper's masked model; the
summary shows what that buys. Runs offline in about a minute on a CPU (untrained weights: load
yours with `ResNet18(..., weights="best.keras")`):

    python examples/prune_and_export.py [output_dir]
"""

import sys

import numpy as np
import tensorflow as tf

import keras_topo
from keras_topo.pruning import compare, prune_channels

out_dir = sys.argv[1] if len(sys.argv) > 1 else "pruned_resnet18"
model = keras_topo.applications.ResNet18((32, 32, 3), 10, topography="grid")

# The paper's headline setting: 62 % of the channels of each topographic layer.
masked = prune_channels(model, 0.62, criterion="l2", mode="mask")
pruned = prune_channels(model, 0.62, criterion="l2", mode="remove")

x = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype("float32")
difference = np.abs(masked.predict(x, verbose=0) - pruned.predict(x, verbose=0)).max()
print(f"max |masked - pruned| = {difference:.2e}")
compare(model, pruned, batch_size=32, print_table=True)

pruned.export(out_dir, format="tf_saved_model", verbose=False)
reloaded = tf.saved_model.load(out_dir)  # keep a reference: it owns the variables
served = reloaded.serve(x)
print(
    f"SavedModel in {out_dir}/ serves the same logits: {np.allclose(served, pruned(x), atol=1e-5)}"
)
