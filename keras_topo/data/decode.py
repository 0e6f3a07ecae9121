"""One decoding pass over WAV files: read, resample, fit length, log-mel; with a progress bar.

The loaders decode every clip once into memory (64 x 101 float32 = 26 KB per second of audio)
and build their `tf.data` pipelines on the arrays, so training never waits on WAV decoding.
"""

import sys

import keras
import numpy as np

from keras_topo.data.audio_io import SAMPLE_RATE, fit_length, read_wav
from keras_topo.data.errors import DataError
from keras_topo.data.log_mel import log_mel

CHUNK = 256


def decode_clips(paths, bad_files, length=None, long_clip_policy="crop", label="Decoding"):
    """Log-mel features of WAV files, skipping (or raising on) bad ones through `bad_files`.

    Args:
        paths: list of WAV paths.
        bad_files: an `errors.BadFiles` deciding between raising and skipping.
        length: samples per clip; clips are zero-padded to it and longer ones are handled by
            `long_clip_policy` ("crop", "center" or "raise"). `None` keeps whole clips
            (padded to at least 1 s).
        label: progress-bar title.

    Returns:
        `(features, kept)`: a list of float32 arrays `(64, frames, 1)` and the indices into
        `paths` of the clips kept, in order.
    """
    features, kept = [], []
    progress = keras.utils.Progbar(len(paths), verbose=1 if sys.stdout.isatty() else 2)
    print(f"{label} {len(paths)} WAV files", flush=True)
    for start in range(0, len(paths), CHUNK):
        waves = {}
        for index in range(start, min(start + CHUNK, len(paths))):
            try:
                waves[index] = _read(paths[index], length, long_clip_policy)
            except DataError as error:
                bad_files.report(error)
        features_by_index = _log_mel_grouped(waves)
        for index in sorted(features_by_index):
            if not np.all(np.isfinite(features_by_index[index])):
                bad_files.report(DataError(f"{paths[index]}: non-finite log-mel features"))
                continue
            features.append(features_by_index[index])
            kept.append(index)
        progress.update(min(start + CHUNK, len(paths)))
    return features, kept


def _read(path, length, long_clip_policy):
    audio = read_wav(path)
    if length is None:
        return fit_length(audio, max(SAMPLE_RATE, audio.shape[0]))
    if audio.shape[0] > length and long_clip_policy == "raise":
        raise DataError(
            f"{path}: clip is {audio.shape[0]} samples at 16 kHz, over {length} "
            "(pass long_clip_policy='crop' or 'center')"
        )
    return fit_length(audio, length, long_clip_policy)


def _log_mel_grouped(waves):
    """Log-mel of `{index: waveform}`, one batched call per distinct length."""
    by_length = {}
    for index, wave in waves.items():
        by_length.setdefault(wave.shape[0], []).append(index)
    out = {}
    for indices in by_length.values():
        batch = log_mel(np.stack([waves[i] for i in indices])).numpy()
        out.update(zip(indices, batch, strict=True))
    return out
