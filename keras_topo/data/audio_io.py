"""WAV reading with checks, resampling to 16 kHz, and fitting clips to a fixed length.

Reading uses soundfile (libsndfile); tensorflow-io's decoders do not load on TF >= 2.17.
Resampling uses scipy's polyphase filter (`scipy.signal.resample_poly`). Both are the `[audio]`
extra, imported on first use so that CIFAR needs neither.
"""

import importlib
import math
import os
import re

import numpy as np

from keras_topo.data.errors import DataError

SAMPLE_RATE = 16000
# Float WAVs hold nominal [-1, 1] samples; beyond 100 (40 dB over full scale) a file is corrupt
# and its features would dominate the training set's normalisation statistics.
MAX_ABS_SAMPLE = 100.0

# libsndfile logs "data : <declared> (should be <present>)" when the data chunk is cut short.
_TRUNCATED = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def read_wav(path, sample_rate=SAMPLE_RATE):
    """Reads a mono WAV file as float32 samples in [-1, 1] at `sample_rate` Hz.

    Returns a 1-D array `(samples,)`. Raises `DataError` naming the file when it is missing,
    unreadable, truncated, empty, not mono, 8-bit, or holds NaN/inf or huge (> 100) samples.
    """
    soundfile = _import("soundfile")
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    try:
        info = soundfile.info(path)
        truncated = _TRUNCATED.search(info.extra_info)
        if truncated and int(truncated.group(1)) > int(truncated.group(2)):
            raise DataError(
                f"{path}: truncated WAV ({truncated.group(2)} of {truncated.group(1)} data bytes)"
            )
        if info.channels != 1:
            raise DataError(f"{path}: {info.channels} channels; expected a mono WAV")
        if info.subtype in ("PCM_U8", "PCM_S8"):
            raise DataError(f"{path}: 8-bit WAV; expected 16-bit (or wider) samples")
        audio, rate = soundfile.read(path, dtype="float32")
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise DataError(f"{path}: unreadable audio file ({error})") from error
    if audio.size == 0:
        raise DataError(f"{path}: empty WAV (no samples)")
    if not np.all(np.isfinite(audio)):
        raise DataError(f"{path}: NaN or infinite samples (a corrupt float WAV); fix or remove it")
    peak = float(np.max(np.abs(audio)))
    if peak > MAX_ABS_SAMPLE:
        raise DataError(
            f"{path}: sample magnitude {peak:.3g}, far outside [-1, 1] (a corrupt float WAV); "
            "fix or remove it"
        )
    return resample(audio, rate, sample_rate)


def resample(audio, rate, target_rate=SAMPLE_RATE):
    """Resamples a 1-D float array from `rate` to `target_rate` Hz (polyphase filter)."""
    if rate == target_rate:
        return audio
    signal = _import("scipy.signal")
    g = math.gcd(int(rate), int(target_rate))
    return signal.resample_poly(audio, target_rate // g, rate // g).astype(np.float32)


def fit_length(audio, length, long_clip_policy="crop"):
    """Zero-pads `audio` at the end, or shortens it, to exactly `length` samples.

    Longer clips keep their first `length` samples (`long_clip_policy="crop"`) or the middle
    ones ("center").
    """
    if audio.shape[0] <= length:
        return np.pad(audio, (0, length - audio.shape[0]))
    start = (audio.shape[0] - length) // 2 if long_clip_policy == "center" else 0
    return audio[start : start + length]


def _import(module):
    """Imports an `[audio]` extra's module, or says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"Audio datasets need {module.split('.')[0]}: pip install 'keras-topo[audio]' "
            "(scipy and soundfile)."
        ) from error
