"""A subclassed model (no functional graph), for the tests of what needs one."""

import keras


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(4, 3)

    def call(self, x):
        return self.conv(x)
