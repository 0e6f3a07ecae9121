"""Training-set mean and std of the log-mel features, computed once and cached as JSON.

The cache file `.keras_topo_stats_<hash>.json` lives next to the data; when the data folder is
read-only it goes to `$KERAS_TOPO_CACHE_DIR` (default `~/.cache/keras_topo`). The hash covers
what the statistics depend on (the training files' contents, labels, front end), so a changed
training set is never normalised with stale statistics. Statistics that are not finite, or a
zero std, are refused whether computed or read from a cache.
"""

import hashlib
import json
import os

import numpy as np

from keras_topo.data.errors import DataError, logger


def user_cache_dir():
    """Writable fallback folder for caches: `$KERAS_TOPO_CACHE_DIR` or `~/.cache/keras_topo`."""
    default = os.path.join(os.path.expanduser("~"), ".cache", "keras_topo")
    return os.environ.get("KERAS_TOPO_CACHE_DIR", default)


def file_fingerprint(paths, root):
    """One line per file for a cache key that changes with the files' contents.

    A line holds the path relative to `root`, the size and a BLAKE2 digest of all the bytes.
    The whole content, not the modification time: a rewrite that keeps size and time (`cp -p`,
    `rsync -t`, unpacking another version of an archive) changes the key, and a copy or a
    `touch` of the same bytes keeps it. Hashing costs about 5 % of decoding a clip (measured:
    0.09 ms per 32 KB file against 1.5-2 ms for its log-mel features).
    """
    return [_fingerprint(path, root) for path in paths]


def _fingerprint(path, root):
    relative = os.path.relpath(path, root)
    try:
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16))
            size = f.tell()
    except OSError:
        return f"{relative} missing"
    return f"{relative} {size} {digest.hexdigest()}"


def feature_stats(features, what="the training split"):
    """Scalar mean and std over all values of a list of feature arrays (float64 sums).

    Raises `DataError` when they cannot normalise: no values, non-finite values, or a constant
    training set (std 0, e.g. all clips silent).
    """
    count = sum(f.size for f in features)
    if count == 0:
        raise DataError(f"Cannot compute normalisation statistics: {what} is empty.")
    total = sum(np.sum(f, dtype=np.float64) for f in features)
    squares = sum(np.sum(np.square(f, dtype=np.float64)) for f in features)
    mean = total / count
    std = float(np.sqrt(max(squares / count - mean * mean, 0.0)))
    _check_stats(float(mean), std, what)
    return float(mean), std


def _check_stats(mean, std, what):
    if not (np.isfinite(mean) and np.isfinite(std)):
        raise DataError(
            f"Normalisation statistics of {what} are not finite (mean {mean}, std {std}); "
            "a file holds NaN/inf or huge values: fix or remove it."
        )
    if std == 0.0:
        raise DataError(
            f"The features of {what} are all equal (std 0, e.g. every clip silent): they cannot "
            "be normalised; check the training files."
        )


def cached_stats(data_dir, key, compute):
    """`(mean, std)` for the training set described by `key`, from the cache or `compute()`.

    A cache file that is unreadable or holds unusable statistics is ignored (and replaced).

    Args:
        data_dir: the dataset folder (the preferred cache location).
        key: JSON-serialisable description of the training set and front end.
        compute: callable returning `(mean, std)`; called only on a cache miss.
    """
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = f".keras_topo_stats_{digest}.json"
    candidates = [os.path.join(data_dir, name), os.path.join(user_cache_dir(), name)]
    for path in candidates:
        cached = _read_cache(path)
        if cached is not None:
            return cached
    mean, std = compute()
    payload = json.dumps({"mean": mean, "std": std, "data_dir": os.path.abspath(data_dir)})
    for path in candidates:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _write_atomically(path, payload)
        except OSError as error:
            logger.info("Cannot cache normalisation statistics at %s (%s)", path, error)
            continue
        if path != candidates[0]:
            logger.warning("%s is read-only: cached normalisation statistics in %s", data_dir, path)
        return mean, std
    logger.warning("Could not cache normalisation statistics (tried %s)", candidates)
    return mean, std


def _read_cache(path):
    """`(mean, std)` from a cache file, or None when it is absent or unusable."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            stats = json.load(f)
        mean, std = float(stats["mean"]), float(stats["std"])
        _check_stats(mean, std, f"the cache {path}")
    except (OSError, ValueError, KeyError, TypeError) as error:  # DataError is a ValueError.
        logger.warning("Ignoring normalisation statistics cache %s (%s)", path, error)
        return None
    return mean, std


def _write_atomically(path, text):
    """Writes `text` to `path` through a temporary file and a rename (never half a file)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
