"""Speech Commands (v0.02 layout) as normalised log-mel `tf.data` pipelines.

Layout under `data_dir`: `<label>/<file>.wav`, `validation_list.txt` and `testing_list.txt`
(paths relative to `data_dir`); training is every other WAV of the label folders.
`_background_noise_` is never a label. Any label set in this layout works (e.g. the 12-class
set with `_silence_`/`_unknown_`, or spoken digits). Clips are resampled to 16 kHz, zero-padded
to 1 s, and longer clips follow `long_clip_policy`. Every clip is decoded once into memory.
"""

import os
import posixpath

import numpy as np
import tensorflow as tf

from keras_topo.data import download as download_lib
from keras_topo.data import log_mel as log_mel_lib
from keras_topo.data import pipeline
from keras_topo.data.audio_io import SAMPLE_RATE
from keras_topo.data.errors import BadFiles, DataError
from keras_topo.data.feature_cache import cached_decode_clips, check_location
from keras_topo.data.normalization import cached_stats, feature_stats, file_fingerprint

URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
SHA256 = "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"
SPLITS = ("train", "validation", "test")
LONG_CLIP_POLICIES = ("crop", "center", "raise")
_LISTS = {"validation": "validation_list.txt", "test": "testing_list.txt"}
_EXCLUDED = "_background_noise_"


def _missing(data_dir):
    names = ("", *_LISTS.values())
    return [n or "the folder" for n in names if not os.path.exists(os.path.join(data_dir, n))]


def _check_data_dir(data_dir, download):
    if _missing(data_dir) and download:
        download_lib.fetch_and_extract(URL, SHA256, data_dir)
    missing = _missing(data_dir)
    if missing:
        raise DataError(
            f"Speech Commands not found at {data_dir!r} (missing: {', '.join(missing)}). "
            "Expected <label>/<file>.wav, validation_list.txt and testing_list.txt: get "
            f"{URL}, unpack it there, or pass download=True."
        )


def speech_commands_labels(data_dir):
    """Default labels: the sorted label folders of `data_dir`, without `_background_noise_`."""
    return sorted(
        name
        for name in os.listdir(data_dir)
        if os.path.isdir(os.path.join(data_dir, name))
        and name != _EXCLUDED
        and not name.startswith(".")
    )


def _read_list(data_dir, name):
    """The entries of a split list as `label/file.wav` (`./label/file.wav`, `label\\file.wav`
    and `label//file.wav` name the same clip)."""
    with open(os.path.join(data_dir, name)) as f:
        lines = [line.strip().replace("\\", "/") for line in f]
    return [posixpath.normpath(line) for line in lines if line]


def split_files(data_dir, split, labels, bad_files):
    """Relative paths and label ids of one split; bad entries go to `bad_files`."""
    label_ids = {label: index for index, label in enumerate(labels)}
    held_out = {s: _read_list(data_dir, name) for s, name in _LISTS.items()}
    if split != "train":
        entries = [e for e in held_out[split] if e.split("/")[0] in label_ids]
        present = []
        for entry in entries:
            if os.path.isfile(os.path.join(data_dir, entry)):
                present.append(entry)
            else:
                bad_files.report(DataError(f"{entry}: listed in {_LISTS[split]} but not found"))
        return present, np.asarray([label_ids[e.split("/")[0]] for e in present], np.int32)
    excluded = set(held_out["validation"]) | set(held_out["test"])
    files, ids = [], []
    for label in labels:
        folder = os.path.join(data_dir, label)
        wavs = sorted(
            f for f in os.listdir(folder) if f.lower().endswith(".wav") and not f.startswith(".")
        )
        if not wavs:
            bad_files.report(DataError(f"{folder}: empty class folder (no .wav files)"))
        kept = [f"{label}/{f}" for f in wavs if f"{label}/{f}" not in excluded]
        files += kept
        ids += [label_ids[label]] * len(kept)
    return files, np.asarray(ids, np.int32)


def _decode(data_dir, files, ids, bad_files, long_clip_policy, split, cache, prints=None):
    paths = [os.path.join(data_dir, f) for f in files]
    features, kept = cached_decode_clips(
        paths,
        bad_files,
        data_dir,
        cache,
        SAMPLE_RATE,
        long_clip_policy,
        f"Speech Commands {split}:",
        prints,
    )
    if not features:
        raise DataError(f"{data_dir}: no readable clip in the {split} split")
    return np.stack(features), ids[kept], kept


def speech_commands(
    data_dir,
    split="train",
    batch_size=128,
    seed=0,
    labels=None,
    subset=None,
    long_clip_policy="crop",
    on_error="raise",
    download=False,
    split_seed=0,
    feature_cache=True,
):
    """Speech Commands as a `tf.data.Dataset` of normalised log-mel features and labels.

    Args:
        data_dir: dataset folder (see module docstring).
        split: "train", "validation" or "test".
        batch_size: examples per batch.
        seed: shuffling seed (training split only; order deterministic under it).
        labels: label names, in label-id order; default: `speech_commands_labels(data_dir)`.
            Folders not named here are ignored.
        subset: optional number of examples: a random sample of the split (`split_seed`).
        long_clip_policy: clips over 1 s keep their first second ("crop"), their middle
            second ("center"), or are bad input ("raise", or skipped under on_error="skip").
        on_error: "raise" on a bad file (unreadable, truncated, stereo, 8-bit, listed but
            missing, empty class folder) naming it, or "skip" it and log a count.
        download: fetch and unpack the official v0.02 archive into `data_dir` if missing.
        split_seed: seed of `subset`.
        feature_cache: keep each split's log-mel features on disk, keyed on the files'
            contents and every feature setting, so that later loads skip decoding: True (in
            `data_dir`, or `$KERAS_TOPO_CACHE_DIR` if read-only), a folder, or False.

    Returns:
        `tf.data.Dataset` of float32 `(B, 64, 101, 1)` log-mel features normalised by the
        training split's mean and std (computed once, cached as JSON), and int32 labels `(B,)`.
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}; received {split!r}.")
    if long_clip_policy not in LONG_CLIP_POLICIES:
        raise ValueError(
            f"`long_clip_policy` must be one of {LONG_CLIP_POLICIES}; received {long_clip_policy!r}."
        )
    check_location(feature_cache)
    _check_data_dir(data_dir, download)
    labels = list(labels) if labels is not None else speech_commands_labels(data_dir)
    for label in labels:
        if not os.path.isdir(os.path.join(data_dir, label)):
            raise DataError(f"{os.path.join(data_dir, label)}: label folder not found")
    bad_files = BadFiles(on_error)
    train_files, train_ids = split_files(data_dir, "train", labels, bad_files)
    decoded = {}

    def compute_stats():
        decoded["train"] = _decode(
            data_dir,
            train_files,
            train_ids,
            bad_files,
            long_clip_policy,
            "train",
            feature_cache,
            key["files"],  # hashed once for both caches
        )
        return feature_stats([decoded["train"][0]], f"the training split of {data_dir}")

    key = {
        "loader": "speech_commands",
        "labels": labels,
        "long_clip_policy": long_clip_policy,
        "front_end": log_mel_lib.FRONT_END,
        "files": file_fingerprint([os.path.join(data_dir, f) for f in train_files], data_dir),
    }
    mean, std = cached_stats(data_dir, key, compute_stats)
    if split == "train":
        files, ids = train_files, train_ids
    else:
        files, ids = split_files(data_dir, split, labels, bad_files)
    chosen = pipeline.subset_indices(len(files), subset, split_seed)
    if split == "train" and "train" in decoded:  # decoded for the statistics: reuse
        features, ids, kept = decoded["train"]
        position = {file_index: row for row, file_index in enumerate(kept)}
        rows = [position[i] for i in chosen if i in position]
        features, ids = features[rows], ids[rows]
    else:
        files = [files[i] for i in chosen]
        prints = [key["files"][i] for i in chosen] if split == "train" else None
        features, ids, _ = _decode(
            data_dir, files, ids[chosen], bad_files, long_clip_policy, split, feature_cache, prints
        )
    bad_files.log_summary(f"Speech Commands ({data_dir})")
    features = (features - np.float32(mean)) / np.float32(std)
    dataset = tf.data.Dataset.from_tensor_slices((features, ids))
    return pipeline.finish(dataset, batch_size, split == "train", seed, len(ids))
