"""Shared test setup: backend-aware skipping and seeding."""

import keras
import numpy as np
import pytest


def pytest_collection_modifyitems(config, items):
    if keras.backend.backend() == "tensorflow":
        return
    skip = pytest.mark.skip(reason="needs the TensorFlow backend")
    # Whole-model tests of backend-agnostic logic (graph rewriting, recipes) run once, in the
    # TensorFlow pass; on JAX and torch their time is compilation, not coverage.
    once = pytest.mark.skip(reason="slow: runs in the TensorFlow pass")
    for item in items:
        if "tf_only" in item.keywords:
            item.add_marker(skip)
        elif "slow" in item.keywords:
            item.add_marker(once)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    np.random.seed(0)
    yield
    keras.config.set_dtype_policy("float32")
