"""Make your own small CNN topographic with `make_topographic`, then fit it as usual.

Runs offline in about a minute on a CPU, on scikit-learn's handwritten digits (1,797 real
8x8 images that ship with scikit-learn):

    python examples/make_your_model_topographic.py
"""

import keras
from sklearn.datasets import load_digits

import keras_topo

# 1. Your model, as you already have it.
inputs = keras.Input((8, 8, 1))
x = keras.layers.Conv2D(32, 3, padding="same", name="conv1")(inputs)
x = keras.layers.BatchNormalization(momentum=0.9)(x)
x = keras.layers.ReLU()(x)
x = keras.layers.Conv2D(64, 3, padding="same", name="conv2")(x)
x = keras.layers.BatchNormalization(momentum=0.9)(x)
x = keras.layers.ReLU()(x)
x = keras.layers.GlobalAveragePooling2D()(x)
model = keras.Model(inputs, keras.layers.Dense(10)(x))

# 2. A topographic copy: both convs swapped, weights kept, loss = CE + lambda * mean(L_topo).
topo = keras_topo.make_topographic(model, topography="grid", weight=1.0, reduction="mean")
# Optional: torch's fused conv and batch-norm kernels (faster on the torch backend, Keras' own
# code on the others; same weights and outputs).
topo = keras_topo.use_fast_layers(topo)

# 3. Plain compile/fit; the logger puts each layer's topographic loss in the history.
digits = load_digits()
images = (digits.images[..., None] / 16.0).astype("float32")
labels = digits.target
topo.compile(
    optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
history = topo.fit(
    images[:1500],
    labels[:1500],
    validation_data=(images[1500:], labels[1500:]),
    epochs=5,
    batch_size=64,
    callbacks=[keras_topo.TopographicLossLogger(images[1500:1564])],
    verbose=2,
)
print("topographic loss per layer (last epoch):")
for name, values in history.history.items():
    if name.startswith("topo_loss/"):
        print(f"  {name.removeprefix('topo_loss/')}: {values[-1]:.4f}")
print(f"validation accuracy: {history.history['val_accuracy'][-1]:.3f}")
print("conv2 channel positions:", topo.get_layer("conv2").positions.shape)  # (64, 2)

# 4. Ship it: the plain Keras model back, same weights and outputs, no training-only losses.
plain = keras_topo.strip_topography(topo)
print(
    f"stripped: {len(plain.losses)} losses, {len(keras_topo.topographic_layers(plain))} topographic layers"
)
