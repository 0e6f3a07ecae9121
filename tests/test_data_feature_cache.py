"""Log-mel feature cache: reused for the same files and settings, rebuilt when either changes."""

import glob
import os

import numpy as np
import pytest
import soundfile

from keras_topo.data import DataError, log_mel, speech_commands
from keras_topo.data import feature_cache as cache_lib
from keras_topo.data.errors import BadFiles
from keras_topo.data.log_mel import FRONT_END

LENGTH = 16000


def _write(path, seconds, freq, rate=16000):
    """A tone that fades in: any two windows of it differ."""
    t = np.arange(int(seconds * rate)) / rate
    os.makedirs(os.path.dirname(path), exist_ok=True)
    wave = 0.5 * t / seconds * np.sin(2 * np.pi * freq * t)
    soundfile.write(path, wave.astype(np.float32), rate)


@pytest.fixture
def clips(tmp_path):
    """Three short clips and one 1.5 s clip (its crop and its centre differ)."""
    root = tmp_path / "words"
    paths = [str(root / "yes" / f"{i}.wav") for i in range(3)] + [str(root / "no" / "long.wav")]
    for i, path in enumerate(paths[:3]):
        _write(path, 0.4, 300.0 * (i + 1))
    _write(paths[3], 1.5, 1000.0)
    return str(root), paths


@pytest.fixture
def decodes(monkeypatch):
    """Counts the decoding passes the cache lets through."""
    calls = []
    real = cache_lib.decode_clips

    def counting(paths, *args, **kwargs):
        calls.append(len(paths))
        return real(paths, *args, **kwargs)

    monkeypatch.setattr(cache_lib, "decode_clips", counting)
    return calls


def _load(root, paths, location=True, policy="crop", on_error="raise"):
    features, kept = cache_lib.cached_decode_clips(
        paths, BadFiles(on_error), root, location, LENGTH, policy
    )
    return np.stack(features), kept


def _entries(folder):
    return glob.glob(os.path.join(folder, f"{cache_lib.PREFIX}*.npz"))


def test_same_files_and_settings_reuse_the_cache(clips, decodes):
    root, paths = clips
    first, kept = _load(root, paths)
    again, kept_again = _load(root, paths)
    assert decodes == [4] and kept == kept_again == [0, 1, 2, 3]
    np.testing.assert_array_equal(again, first)
    # The cached features are the front end's, computed independently here.
    waves = np.stack(
        [np.pad(soundfile.read(p, dtype="float32")[0], (0, LENGTH))[:LENGTH] for p in paths]
    )
    np.testing.assert_allclose(first, log_mel(waves).numpy(), rtol=1e-6, atol=1e-5)
    assert len(_entries(root)) == 1


def test_another_setting_rebuilds(clips, decodes, monkeypatch):
    root, paths = clips
    crop, _ = _load(root, paths, policy="crop")
    center, _ = _load(root, paths, policy="center")
    assert decodes == [4, 4]
    assert not np.array_equal(crop[3], center[3])  # the long clip: other second, rebuilt
    np.testing.assert_array_equal(crop[:3], center[:3])
    monkeypatch.setitem(FRONT_END, "fmax", 7000.0)  # any front-end setting is in the key
    _load(root, paths)
    assert decodes == [4, 4, 4]
    monkeypatch.undo()
    np.testing.assert_array_equal(_load(root, paths)[0], crop)
    assert decodes == [4, 4, 4]  # each setting kept its own entry


def test_a_changed_file_rebuilds_even_with_size_and_time_kept(clips, decodes):
    root, paths = clips
    before, _ = _load(root, paths)
    stat = os.stat(paths[1])
    _write(paths[1], 0.4, 3000.0)  # same length, other tone
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.path.getsize(paths[1]) == stat.st_size
    after, _ = _load(root, paths)
    assert decodes == [4, 4]
    assert not np.array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[[0, 2, 3]], after[[0, 2, 3]])
    assert len(_entries(root)) == 1  # the stale entry was removed


def test_an_unreadable_entry_is_rebuilt(clips, decodes):
    root, paths = clips
    first, _ = _load(root, paths)
    (entry,) = _entries(root)
    with open(entry, "r+b") as f:
        f.truncate(100)
    np.testing.assert_array_equal(_load(root, paths)[0], first)
    assert decodes == [4, 4]


def test_skipped_files_are_reported_again_from_the_cache(clips, decodes):
    root, paths = clips
    broken = os.path.join(root, "yes", "broken.wav")
    with open(broken, "wb") as f:
        f.write(b"RIFF\x00\x00")
    _, kept = _load(root, [*paths, broken], on_error="skip")
    assert kept == [0, 1, 2, 3]
    bad_files = BadFiles("skip")
    cache_lib.cached_decode_clips([*paths, broken], bad_files, root, True, LENGTH)
    assert len(bad_files.skipped) == 1 and "broken.wav: unreadable" in bad_files.skipped[0]
    with pytest.raises(DataError, match="broken.wav: unreadable.*on_error='skip'"):
        _load(root, [*paths, broken], on_error="raise")
    assert decodes == [5]


def test_cache_location(clips, decodes, tmp_path):
    root, paths = clips
    elsewhere = str(tmp_path / "cache")
    _load(root, paths, location=elsewhere)
    _load(root, paths, location=elsewhere)
    assert len(_entries(elsewhere)) == 1 and not _entries(root)
    _load(root, paths, location=False)
    _load(root, paths, location=False)
    assert decodes == [4, 4, 4] and not _entries(root)
    with pytest.raises(ValueError, match="`feature_cache` must be True"):
        speech_commands(root, feature_cache=1)


@pytest.mark.tf_only
def test_speech_commands_reads_its_features_from_the_cache(clips, decodes):
    root, _ = clips
    for name in ("validation_list.txt", "testing_list.txt"):
        open(os.path.join(root, name), "w").close()

    def collect():
        return np.concatenate([x for x, _ in speech_commands(root, batch_size=2, seed=1)])

    first = collect()
    assert decodes == [4]
    np.testing.assert_array_equal(collect(), first)  # statistics and features from the caches
    assert decodes == [4]


def test_a_read_only_data_folder_caches_in_the_user_cache_dir(
    clips, decodes, tmp_path, monkeypatch
):
    root, paths = clips
    user_cache = tmp_path / "user_cache"
    monkeypatch.setenv("KERAS_TOPO_CACHE_DIR", str(user_cache))
    real_open = open

    def read_only_open(path, mode="r", *args, **kwargs):
        if "w" in mode and str(path).startswith(root):
            raise PermissionError(13, "Read-only file system", path)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(cache_lib, "open", read_only_open, raising=False)
    first, _ = _load(root, paths)
    np.testing.assert_array_equal(_load(root, paths)[0], first)
    assert decodes == [4] and not _entries(root) and len(_entries(str(user_cache))) == 1
