"""Training-set mean and std of the log-mel features, computed once and cached as JSON.

The cache file `.keras_topo_stats_<hash>.json` lives next to the data; when the data folder is
read-only it goes to `$KERAS_TOPO_CACHE_DIR` (default `~/.cache/keras_topo`). The hash covers
what the statistics depend on (training files and their sizes, labels, front end), so a changed
training set is never normalised with stale statistics.
"""

import hashlib
import json
import os

import numpy as np

from keras_topo.data.errors import logger


def user_cache_dir():
    """Writable fallback folder for caches: `$KERAS_TOPO_CACHE_DIR` or `~/.cache/keras_topo`."""
    default = os.path.join(os.path.expanduser("~"), ".cache", "keras_topo")
    return os.environ.get("KERAS_TOPO_CACHE_DIR", default)


def file_fingerprint(paths):
    """Lines `path size` for `paths`, for a cache key that changes with the files."""
    return [f"{p} {os.path.getsize(p) if os.path.isfile(p) else -1}" for p in paths]


def feature_stats(features):
    """Scalar mean and std over all values of a list of feature arrays (float64 sums)."""
    count = sum(f.size for f in features)
    if count == 0:
        raise ValueError("Cannot compute normalisation statistics: the training split is empty.")
    total = sum(np.sum(f, dtype=np.float64) for f in features)
    squares = sum(np.sum(np.square(f, dtype=np.float64)) for f in features)
    mean = total / count
    return float(mean), float(np.sqrt(max(squares / count - mean * mean, 0.0)))


def cached_stats(data_dir, key, compute):
    """`(mean, std)` for the training set described by `key`, from the cache or `compute()`.

    Args:
        data_dir: the dataset folder (the preferred cache location).
        key: JSON-serialisable description of the training set and front end.
        compute: callable returning `(mean, std)`; called only on a cache miss.
    """
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = f".keras_topo_stats_{digest}.json"
    candidates = [os.path.join(data_dir, name), os.path.join(user_cache_dir(), name)]
    for path in candidates:
        if os.path.isfile(path):
            with open(path) as f:
                stats = json.load(f)
            return stats["mean"], stats["std"]
    mean, std = compute()
    payload = json.dumps({"mean": mean, "std": std, "data_dir": os.path.abspath(data_dir)})
    for path in candidates:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(payload)
        except OSError as error:
            logger.info("Cannot cache normalisation statistics at %s (%s)", path, error)
            continue
        if path != candidates[0]:
            logger.warning("%s is read-only: cached normalisation statistics in %s", data_dir, path)
        return mean, std
    logger.warning("Could not cache normalisation statistics (tried %s)", candidates)
    return mean, std
