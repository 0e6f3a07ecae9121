"""Log-mel features of WAV files computed once and cached on disk, keyed on content and settings.

An entry is one uncompressed `.npz` file, `.keras_topo_features_<slot>_<content>.npz`:
- `slot`: a digest of what was asked for: every feature setting (`log_mel.FRONT_END`, clip
  length, long-clip policy, this cache's format), the data folder and the list of files;
- `content`: a digest of every file's full-content BLAKE2 (`normalization.file_fingerprint`).
A cache written under other settings, or over files whose bytes changed since, has another
name and is never read: the features are decoded again and written under the new name, which
removes the other entries of the same slot (the same files with older contents: stale for
good). An entry that cannot be read, or does not fit the files, is ignored and rebuilt.

Location (`location` argument, the loaders' `feature_cache`): True puts entries in the data
folder, or in `$KERAS_TOPO_CACHE_DIR` (default `~/.cache/keras_topo`) when that is read-only,
like the statistics cache; a folder path puts them there; False decodes at every load. The
data folder's absolute path is part of the slot, so a moved data folder is decoded once more.
Size: 26 KB per second of audio (64 x 101 float32), about 2.2 GB for Speech Commands' 85k
training clips.
"""

import glob
import hashlib
import json
import os
import zipfile

import numpy as np

from keras_topo.data.decode import decode_clips
from keras_topo.data.errors import DataError, logger
from keras_topo.data.log_mel import FRONT_END, NUM_MELS
from keras_topo.data.normalization import file_fingerprint, user_cache_dir

FORMAT = 1
PREFIX = ".keras_topo_features_"


def check_location(location):
    """Validates a `feature_cache` setting: True, False or a folder path."""
    if location is True or location is False or isinstance(location, str | os.PathLike):
        return location
    raise ValueError(
        "`feature_cache` must be True (next to the data), False (no cache) or a folder path; "
        f"received {location!r}."
    )


def settings(length, long_clip_policy):
    """Every setting the cached features depend on (JSON-serialisable)."""
    return {
        "format": FORMAT,
        "front_end": FRONT_END,
        "length": length,
        "long_clip_policy": long_clip_policy,
    }


def entry_name(paths, root, length=None, long_clip_policy="crop", fingerprints=None):
    """File name of the cache entry for these files (contents) and settings."""
    relative = [os.path.relpath(path, root) for path in paths]
    slot = _digest([settings(length, long_clip_policy), os.path.abspath(root), relative])
    content = _digest(file_fingerprint(paths, root) if fingerprints is None else fingerprints)
    return f"{PREFIX}{slot}_{content}.npz"


def cached_decode_clips(
    paths,
    bad_files,
    root,
    location=True,
    length=None,
    long_clip_policy="crop",
    label="Decoding",
    fingerprints=None,
):
    """`decode.decode_clips` through the cache: decodes only when no valid entry exists.

    Bad files skipped when the entry was written are reported to `bad_files` again when it is
    read, so `on_error="raise"` still raises naming them (and "skip" logs them).

    Args:
        paths: WAV paths under the data folder `root`.
        bad_files, length, long_clip_policy, label: as in `decode_clips`.
        location: True, False or a folder (see module docstring).
        fingerprints: `file_fingerprint(paths, root)` when already computed.

    Returns:
        `(features, kept)` as `decode_clips`: float32 `(64, frames, 1)` arrays and the indices
        into `paths` of the clips kept.
    """
    if location is False:
        return decode_clips(paths, bad_files, length, long_clip_policy, label)
    name = entry_name(paths, root, length, long_clip_policy, fingerprints)
    folders = [root, user_cache_dir()] if location is True else [os.fspath(location)]
    for folder in folders:
        entry = _read(os.path.join(folder, name), len(paths))
        if entry is not None:
            features, kept, skipped = entry
            for message in skipped:
                bad_files.report(DataError(message))
            logger.info("%s read %d clips' features from %s", label, len(kept), folder)
            return features, kept
    already = len(bad_files.skipped)
    features, kept = decode_clips(paths, bad_files, length, long_clip_policy, label)
    if features:
        _write(folders, name, features, kept, bad_files.skipped[already:])
    return features, kept


def _digest(value):
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _read(path, count):
    """`(features, kept, skipped)` of an entry, or None when absent or unusable."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as entry:
            values, frames = entry["features"], entry["frames"]
            kept, skipped = entry["kept"], entry["skipped"]
        if not (
            values.ndim == 3
            and values.shape[0] == NUM_MELS
            and len(frames) == len(kept)
            and int(frames.sum()) == values.shape[1]
            and np.all((kept >= 0) & (kept < count))
        ):
            raise ValueError("arrays do not fit the files")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        logger.warning("Ignoring feature cache %s (%s): decoding again", path, error)
        return None
    features = np.split(values, np.cumsum(frames)[:-1], axis=1)
    return features, kept.tolist(), skipped.tolist()


def _write(folders, name, features, kept, skipped):
    """Writes the entry into the first writable folder; removes its slot's stale entries."""
    arrays = {
        "features": np.concatenate(features, axis=1),
        "frames": np.asarray([f.shape[1] for f in features], np.int64),
        "kept": np.asarray(kept, np.int64),
        "skipped": np.asarray(skipped, dtype=str),
    }
    for folder in folders:
        path = os.path.join(folder, name)
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            os.makedirs(folder, exist_ok=True)
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except OSError as error:
            logger.info("Cannot cache log-mel features at %s (%s)", path, error)
            if os.path.exists(tmp):
                os.remove(tmp)
            continue
        if folder != folders[0]:
            logger.warning("%s is read-only: cached log-mel features in %s", folders[0], folder)
        slot = name[: name.rindex("_")]
        for stale in glob.glob(os.path.join(glob.escape(folder), f"{slot}_*.npz")):
            if stale != path:
                try:
                    os.remove(stale)
                except OSError as error:
                    logger.info("Cannot remove stale feature cache %s (%s)", stale, error)
        return
    logger.warning("Could not cache log-mel features (tried %s)", folders)
