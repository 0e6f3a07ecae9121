"""BirdDCASE (bird audio detection) as log-mel `tf.data` pipelines, plus clip-level metrics.

Layout under `data_dir`: one folder per development set (`BirdVox-DCASE-20k`, `ff1010bird`,
`warblrb10k` by default), each with `wav/<itemid>.wav` and `labels.csv`
(`itemid,datasetid,hasbird`). Each set is split 80/10/10 with `split_seed`. Clips (44.1 kHz)
are resampled to 16 kHz and turned into log-mel features once, whole. Training takes a random
1 s crop of each clip's features (101 frames at a random 10 ms-aligned offset); evaluation
takes every non-overlapping 1 s window (frames `[100 k, 100 k + 101)`, i.e. the audio
`[k s, (k + 1) s)`), and `clip_level_metrics` averages the windows' logits per clip.
"""

import csv
import os

import numpy as np
import tensorflow as tf

from keras_topo.data import log_mel as log_mel_lib
from keras_topo.data import pipeline
from keras_topo.data.errors import BadFiles, DataError
from keras_topo.data.feature_cache import cached_decode_clips, check_location
from keras_topo.data.normalization import cached_stats, feature_stats, file_fingerprint

SETS = ("BirdVox-DCASE-20k", "ff1010bird", "warblrb10k")
SPLITS = ("train", "validation", "test")
CLASS_NAMES = ("nobird", "bird")
WINDOW_FRAMES = log_mel_lib.num_frames(16000)  # 101 frames = 1 s
WINDOW_HOP = 100  # frames between window starts = 1 s
_WHERE = "http://dcase.community/challenge2018/task-bird-audio-detection"


def _read_labels(data_dir, set_name, bad_files):
    """`[(wav path, hasbird)]` of one development set, sorted by item id."""
    csv_path = os.path.join(data_dir, set_name, "labels.csv")
    if not os.path.isfile(csv_path):
        raise DataError(
            f"{csv_path}: not found. Expected <set>/wav/<itemid>.wav and <set>/labels.csv "
            f"for each of {SETS} under {data_dir!r}; the development sets are at {_WHERE}."
        )
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    items = []
    for line, row in enumerate(rows, start=2):
        if row.get("hasbird") not in ("0", "1") or not row.get("itemid"):
            raise DataError(f"{csv_path}, line {line}: expected itemid,datasetid,hasbird in 0/1")
        path = os.path.join(data_dir, set_name, "wav", row["itemid"] + ".wav")
        if os.path.isfile(path):
            items.append((path, int(row["hasbird"])))
        else:
            bad_files.report(DataError(f"{path}: listed in {csv_path} but not found"))
    return sorted(items)


def split_items(
    data_dir, split, split_seed=0, sets=SETS, fractions=(0.8, 0.1, 0.1), bad_files=None
):
    """`(paths, labels)` of one split: each set shuffled with `split_seed`, cut by `fractions`."""
    bad_files = bad_files or BadFiles("raise")
    paths, labels = [], []
    for set_index, set_name in enumerate(sets):
        items = _read_labels(data_dir, set_name, bad_files)
        order = np.random.default_rng([split_seed, set_index]).permutation(len(items))
        n_val, n_test = (round(f * len(items)) for f in fractions[1:])
        n_train = len(items) - n_val - n_test
        bounds = {"train": (0, n_train), "validation": (n_train, n_train + n_val)}
        start, stop = bounds.get(split, (n_train + n_val, len(items)))
        for i in sorted(order[start:stop]):
            paths.append(items[i][0])
            labels.append(items[i][1])
    return paths, np.asarray(labels, np.int32)


def _features(data_dir, split, split_seed, sets, fractions, bad_files, cache, subset=None):
    paths, labels = split_items(data_dir, split, split_seed, sets, fractions, bad_files)
    chosen = pipeline.subset_indices(len(paths), subset, split_seed)
    paths, labels = [paths[i] for i in chosen], labels[chosen]
    if not paths:
        raise ValueError(
            f"The {split} split of BirdDCASE under {data_dir!r} is empty; "
            f"adjust `split_fractions` ({fractions})."
        )
    features, kept = cached_decode_clips(
        paths, bad_files, data_dir, cache, label=f"BirdDCASE {split}:"
    )
    return features, labels[kept], [os.path.relpath(paths[i], data_dir) for i in kept]


def _normalised(data_dir, split, split_seed, sets, fractions, on_error, subset, cache):
    """Normalised whole-clip features `[(64, frames, 1)]`, labels and clip ids of a split."""
    check_location(cache)
    for name in (data_dir, *[os.path.join(data_dir, s) for s in sets]):
        if not os.path.isdir(name):
            raise DataError(f"{name}: folder not found (BirdDCASE development sets: {_WHERE})")
    bad_files = BadFiles(on_error)
    train_paths, _ = split_items(data_dir, "train", split_seed, sets, fractions, bad_files)
    decoded = {}

    def compute_stats():
        decoded["train"] = _features(
            data_dir, "train", split_seed, sets, fractions, bad_files, cache
        )
        return feature_stats(decoded["train"][0], f"the training split of {data_dir}")

    key = {
        "loader": "bird_dcase",
        "front_end": log_mel_lib.FRONT_END,
        "files": file_fingerprint(train_paths, data_dir),
    }
    mean, std = cached_stats(data_dir, key, compute_stats)
    if split == "train" and subset is None and "train" in decoded:
        features, labels, ids = decoded["train"]
    else:
        features, labels, ids = _features(
            data_dir, split, split_seed, sets, fractions, bad_files, cache, subset
        )
    bad_files.log_summary(f"BirdDCASE ({data_dir})")
    features = [(f - np.float32(mean)) / np.float32(std) for f in features]
    return features, labels, ids


def _check(split):
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}; received {split!r}.")


def bird_dcase(
    data_dir,
    split="train",
    batch_size=128,
    seed=0,
    subset=None,
    on_error="raise",
    split_seed=0,
    sets=SETS,
    split_fractions=(0.8, 0.1, 0.1),
    feature_cache=True,
):
    """BirdDCASE as a `tf.data.Dataset` of normalised 1 s log-mel features and labels.

    "train" yields one random 1 s crop per clip and epoch (shuffled, deterministic under
    `seed`); "validation"/"test" yield every non-overlapping 1 s window of every clip, each with
    its clip's label (use `bird_dcase_windows` + `clip_level_metrics` for clip-level scores).

    Args:
        data_dir: folder holding the development sets (see module docstring).
        split: "train", "validation" or "test".
        batch_size: examples per batch.
        seed: shuffling and crop seed.
        subset: optional number of clips: a random sample of the split (`split_seed`).
        on_error: "raise" on a bad WAV (naming it) or "skip" it and log a count.
        split_seed: seed of the per-set 80/10/10 split (keep it fixed across runs).
        sets: development-set folder names.
        split_fractions: train/validation/test fractions of each set.
        feature_cache: keep each split's log-mel features on disk, keyed on the files'
            contents and every feature setting, so that later loads skip decoding: True (in
            `data_dir`, or `$KERAS_TOPO_CACHE_DIR` if read-only), a folder, or False.

    Returns:
        `tf.data.Dataset` of float32 `(B, 64, 101, 1)` features (normalised by the training
        split's mean and std) and int32 labels `(B,)` (1 = bird).
    """
    _check(split)
    if split != "train":
        return bird_dcase_windows(
            data_dir,
            split,
            batch_size,
            subset,
            on_error,
            split_seed,
            sets,
            split_fractions,
            feature_cache,
        )[0]
    features, labels, _ = _normalised(
        data_dir, split, split_seed, sets, split_fractions, on_error, subset, feature_cache
    )
    # Whole clips as ragged (frames, 64, 1) rows, so clips of any length fit in one tensor.
    clips = tf.RaggedTensor.from_row_lengths(
        np.concatenate([np.transpose(f, (1, 0, 2)) for f in features]),
        [f.shape[1] for f in features],
    )

    def crop(clip, label, seeds):
        start = tf.random.stateless_uniform(
            [], seeds, maxval=tf.shape(clip)[0] - WINDOW_FRAMES + 1, dtype=tf.int32
        )
        window = clip[start : start + WINDOW_FRAMES]
        return tf.ensure_shape(tf.transpose(window, [1, 0, 2]), [64, WINDOW_FRAMES, 1]), label

    dataset = tf.data.Dataset.from_tensor_slices((clips, labels))
    return pipeline.finish(dataset, batch_size, True, seed, len(labels), map_fn=crop)


def bird_dcase_windows(
    data_dir,
    split="test",
    batch_size=128,
    subset=None,
    on_error="raise",
    split_seed=0,
    sets=SETS,
    split_fractions=(0.8, 0.1, 0.1),
    feature_cache=True,
):
    """Every non-overlapping 1 s window of every clip of a split, for clip-level evaluation.

    Returns:
        `(dataset, clip_ids, labels)`: the dataset yields `(B, 64, 101, 1)` windows and their
        clip's label, in a fixed order; `clip_ids` (str) and `labels` (int32) are numpy arrays
        with one entry per window, aligned with that order (pass them to `clip_level_metrics`).
    """
    _check(split)
    features, labels, ids = _normalised(
        data_dir, split, split_seed, sets, split_fractions, on_error, subset, feature_cache
    )
    windows, window_ids, window_labels = [], [], []
    for clip, label, clip_id in zip(features, labels, ids, strict=True):
        starts = range(0, clip.shape[1] - WINDOW_FRAMES + 1, WINDOW_HOP)
        windows += [clip[:, s : s + WINDOW_FRAMES] for s in starts]
        window_ids += [clip_id] * len(starts)
        window_labels += [label] * len(starts)
    window_labels = np.asarray(window_labels, np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((np.stack(windows), window_labels))
    return (
        pipeline.finish(dataset, batch_size, False, 0, len(windows)),
        np.asarray(window_ids),
        window_labels,
    )


def clip_level_metrics(logits_per_window, clip_ids, labels):
    """Clip-level accuracy and ROC AUC from per-window logits averaged over each clip.

    Args:
        logits_per_window: `(N, 2)` class logits (or `(N,)`/`(N, 1)` bird logits) per window.
        clip_ids: `(N,)` clip id of each window.
        labels: `(N,)` label (0/1) of each window; all windows of a clip must agree.

    Returns:
        `{"accuracy": float, "roc_auc": float}` (ROC AUC is NaN when one class is absent).
    """
    from sklearn.metrics import roc_auc_score

    logits = np.asarray(logits_per_window, np.float64)
    logits = logits.reshape(len(logits), -1)
    if logits.shape[1] not in (1, 2):
        raise ValueError(
            "`logits_per_window` must be (N, 2) class logits or (N,)/(N, 1) bird logits; "
            f"received shape {np.shape(logits_per_window)}."
        )
    clip_ids, labels = np.asarray(clip_ids), np.asarray(labels)
    if not len(logits) == len(clip_ids) == len(labels):
        raise ValueError(
            "`logits_per_window`, `clip_ids` and `labels` need one entry per window; received "
            f"{len(logits)}, {len(clip_ids)} and {len(labels)}."
        )
    unique, inverse = np.unique(clip_ids, return_inverse=True)
    counts = np.bincount(inverse)
    mean_logits = np.stack(
        [np.bincount(inverse, weights=logits[:, c]) / counts for c in range(logits.shape[1])], 1
    )
    clip_labels = np.zeros(len(unique), np.int64)
    clip_labels[inverse] = labels
    if np.any(clip_labels[inverse] != labels):
        raise ValueError("`labels` differ between windows of the same clip.")
    if mean_logits.shape[1] == 1:
        score = mean_logits[:, 0]
        predictions = (score > 0).astype(np.int64)
    else:
        score = mean_logits[:, 1] - mean_logits[:, 0]  # log-odds of "bird" under a softmax
        predictions = np.argmax(mean_logits, axis=1)
    accuracy = float(np.mean(predictions == clip_labels))
    both = len(np.unique(clip_labels)) == 2
    return {
        "accuracy": accuracy,
        "roc_auc": float(roc_auc_score(clip_labels, score)) if both else float("nan"),
    }
