"""Audio pipelines on tiny synthetic WAVs: log-mel vs librosa, WAV checks, Speech Commands
and BirdDCASE layouts, bad files, statistics cache, clip-level metrics."""

import glob
import json
import os
import sys

import keras
import numpy as np
import pytest
import soundfile

from keras_topo.data import (
    DataError,
    bird_dcase,
    bird_dcase_windows,
    clip_level_metrics,
    load,
    log_mel,
    normalization,
    read_wav,
    speech_commands,
)

RATES = {"yes": 8000, "no": 44100, "_unknown_": 16000, "_silence_": 16000}
TONES = {"yes": 300.0, "no": 1000.0, "_unknown_": 2500.0, "_silence_": 5000.0}


def _tone(freq, seconds, rate, seed=0):
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.01, t.size)
    return (0.5 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def _write(path, audio, rate, subtype="PCM_16"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, audio, rate, subtype=subtype)


def _mel_band(freq):
    """Index of the 64 HTK mel bands (0-8 kHz) whose centre is closest to `freq`."""
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    centres = np.linspace(0, mel(8000), 66)[1:-1]
    return int(np.argmin(np.abs(centres - mel(freq))))


@pytest.fixture
def commands_dir(tmp_path):
    """Speech Commands layout with its quirks: `.wav.wav` names, numbered `_silence_` files,
    8 and 44.1 kHz clips, one 1.5 s clip, short clips, a background-noise folder."""
    root = tmp_path / "commands"
    names = {
        "yes": [f"spk{i}_nohash_0.wav" for i in range(4)],
        "no": [f"spk{i}_nohash_0.wav" for i in range(4)],
        "_unknown_": [f"bed_spk{i}_nohash_0.wav.wav" for i in range(4)],
        "_silence_": [f"{i}.wav" for i in range(4)],
    }
    for label, files in names.items():
        for i, name in enumerate(files):
            seconds = 1.5 if (label == "no" and i == 0) else 0.6 + 0.1 * i
            audio = _tone(TONES[label], seconds, RATES[label], seed=i)
            _write(str(root / label / name), audio, RATES[label])
    _write(str(root / "_background_noise_" / "noise.wav"), _tone(50, 2, 16000), 16000)
    (root / "validation_list.txt").write_text(
        "yes/spk1_nohash_0.wav\n_unknown_/bed_spk1_nohash_0.wav.wav\n"
    )
    (root / "testing_list.txt").write_text("no/spk2_nohash_0.wav\n_silence_/2.wav\n")
    return str(root)


@pytest.fixture
def bird_dir(tmp_path):
    root = tmp_path / "bird"
    for set_name in ("BirdVox-DCASE-20k", "ff1010bird", "warblrb10k"):
        rows = ["itemid,datasetid,hasbird"]
        for i in range(10):
            item = f"{set_name[:4]}_{i}"
            # 2.5 s at 44.1 kHz; birds sing at 4 kHz, the others hum at 300 Hz.
            freq = 4000.0 if i % 2 else 300.0
            _write(str(root / set_name / "wav" / f"{item}.wav"), _tone(freq, 2.5, 44100, i), 44100)
            rows.append(f"{item},{set_name},{i % 2}")
        (root / set_name / "labels.csv").write_text("\n".join(rows) + "\n")
    return str(root)


def _collect(dataset):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.tf_only
def test_log_mel_matches_librosa():
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(0)
    waves = np.stack([_tone(440, 1, 16000), rng.normal(0, 0.1, 16000).astype(np.float32)])
    ours = log_mel(waves).numpy()
    assert ours.shape == (2, 64, 101, 1) and ours.dtype == np.float32
    for wave, features in zip(waves, ours, strict=True):
        mel = librosa.feature.melspectrogram(
            y=wave,
            sr=16000,
            n_fft=400,
            hop_length=160,
            n_mels=64,
            fmin=0.0,
            fmax=8000.0,
            htk=True,
            norm=None,
            center=True,
            pad_mode="reflect",
            power=2.0,
        )
        reference = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
        # Stated tolerance: 0.25 dB. TF's mel filters are triangles in mel rather than in Hz
        # (measured difference on noise: under 0.1 dB per band).
        np.testing.assert_allclose(features[..., 0], reference, atol=0.25)


@pytest.mark.tf_only
def test_log_mel_rejects_bad_shape():
    with pytest.raises(ValueError, match="batch, samples"):
        log_mel(np.zeros(16000, np.float32))


@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_read_wav_resamples_to_16k(tmp_path, rate):
    path = str(tmp_path / "tone.wav")
    _write(path, _tone(1000, 0.5, rate), rate)
    audio = read_wav(path)
    assert audio.shape == (8000,) and audio.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16000 / audio.size - 1000) <= 2  # the tone survives


def test_read_wav_rejects_bad_files(tmp_path):
    good = str(tmp_path / "good.wav")
    _write(good, _tone(440, 1, 16000), 16000)
    data = open(good, "rb").read()
    cases = {
        "missing.wav": (None, "file not found"),
        "truncated.wav": (data[: len(data) // 2], "truncated"),
        "header.wav": (data[:30], "unreadable"),
        "text.wav": (b"hello", "unreadable"),
    }
    for name, (content, message) in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=f"{name}.*{message}"):
            read_wav(str(tmp_path / name))
    _write(str(tmp_path / "stereo.wav"), np.zeros((100, 2), np.float32), 16000)
    with pytest.raises(DataError, match="stereo.wav: 2 channels"):
        read_wav(str(tmp_path / "stereo.wav"))
    _write(str(tmp_path / "u8.wav"), np.zeros(100, np.float32), 16000, "PCM_U8")
    with pytest.raises(DataError, match="u8.wav: 8-bit"):
        read_wav(str(tmp_path / "u8.wav"))
    _write(str(tmp_path / "empty.wav"), np.zeros(0, np.float32), 16000)
    with pytest.raises(DataError, match="empty.wav: empty"):
        read_wav(str(tmp_path / "empty.wav"))


@pytest.mark.tf_only
def test_speech_commands_splits_labels_and_features(commands_dir):
    x, y = _collect(speech_commands(commands_dir, "train", batch_size=4))
    assert x.shape == (12, 64, 101, 1) and x.dtype == np.float32
    # Training-set normalisation: mean 0, std 1 over the training features.
    assert abs(x.mean()) < 1e-4 and abs(x.std() - 1) < 1e-3
    labels = ["_silence_", "_unknown_", "no", "yes"]  # sorted folders, no background noise
    assert sorted(y.tolist()) == sorted([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    # Each clip's loudest band is its label's tone: nothing mislabelled, resampling kept pitch.
    loudest = x[..., 0].mean(axis=2).argmax(axis=1)
    expected = [_mel_band(TONES[labels[label]]) for label in y]
    assert np.all(np.abs(loudest - expected) <= 1)
    x_val, y_val = _collect(speech_commands(commands_dir, "validation", batch_size=4))
    assert sorted(y_val.tolist()) == [1, 3]
    x_test, y_test = _collect(speech_commands(commands_dir, "test", batch_size=4))
    assert sorted(y_test.tolist()) == [0, 2]
    cache = glob.glob(os.path.join(commands_dir, ".keras_topo_stats_*.json"))
    assert len(cache) == 1 and set(json.load(open(cache[0]))) >= {"mean", "std"}


@pytest.mark.tf_only
def test_speech_commands_label_subset_and_order(commands_dir):
    # `subset` picks the same clips whether the statistics are computed or cached.
    first = _collect(speech_commands(commands_dir, "train", subset=5, seed=2))
    second = _collect(speech_commands(commands_dir, "train", subset=5, seed=2))
    assert len(first[1]) == 5
    np.testing.assert_array_equal(first[0], second[0])
    x, y = _collect(speech_commands(commands_dir, "train", labels=["yes", "no"], seed=3))
    assert sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    loudest = x[..., 0].mean(axis=2).argmax(axis=1)
    assert np.all(np.abs(loudest - np.where(y == 0, _mel_band(300), _mel_band(1000))) <= 1)
    again = _collect(speech_commands(commands_dir, "train", labels=["yes", "no"], seed=3))
    np.testing.assert_array_equal(y, again[1])


@pytest.mark.tf_only
def test_long_clip_policy(commands_dir):
    with pytest.raises(
        DataError, match="spk0_nohash_0.wav: clip is 24000 samples at 16 kHz, over 16000"
    ):
        speech_commands(commands_dir, "train", long_clip_policy="raise")
    _, y = _collect(
        speech_commands(commands_dir, "train", long_clip_policy="raise", on_error="skip")
    )
    assert len(y) == 11
    with pytest.raises(ValueError, match="long_clip_policy"):
        speech_commands(commands_dir, "train", long_clip_policy="window")


@pytest.mark.tf_only
def test_speech_commands_bad_input(commands_dir, tmp_path):
    with pytest.raises(DataError, match="download=True"):
        speech_commands(str(tmp_path / "missing"), "train")
    broken = os.path.join(commands_dir, "yes", "spk9_nohash_0.wav")
    with open(broken, "wb") as f:
        f.write(b"RIFF\x00\x00")
    with pytest.raises(DataError, match="spk9_nohash_0.wav: unreadable"):
        speech_commands(commands_dir, "train")
    _, y = _collect(speech_commands(commands_dir, "train", on_error="skip"))
    assert len(y) == 12
    os.remove(broken)
    with open(os.path.join(commands_dir, "testing_list.txt"), "a") as f:
        f.write("yes/ghost_nohash_0.wav\n")
    with pytest.raises(DataError, match="ghost_nohash_0.wav: listed in testing_list.txt"):
        speech_commands(commands_dir, "test")
    os.makedirs(os.path.join(commands_dir, "up"))
    with pytest.raises(DataError, match="up: empty class folder"):
        speech_commands(commands_dir, "validation")


@pytest.mark.tf_only
def test_stats_cache_falls_back_when_data_dir_is_read_only(commands_dir, tmp_path, monkeypatch):
    cache_dir = tmp_path / "user_cache"
    monkeypatch.setenv("KERAS_TOPO_CACHE_DIR", str(cache_dir))
    real_open = open

    def read_only_open(path, mode="r", *args, **kwargs):
        if "w" in mode and str(path).startswith(commands_dir):
            raise PermissionError(13, "Read-only file system", path)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(normalization, "open", read_only_open, raising=False)
    first = _collect(speech_commands(commands_dir, "validation"))[0]
    assert not glob.glob(os.path.join(commands_dir, ".keras_topo_stats_*"))
    assert len(list(cache_dir.glob(".keras_topo_stats_*.json"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("statistics should come from the cache")

    # The package exports the function `speech_commands`, which shadows its module's name.
    monkeypatch.setattr(
        sys.modules["keras_topo.data.speech_commands"], "feature_stats", no_decoding
    )
    np.testing.assert_array_equal(first, _collect(speech_commands(commands_dir, "validation"))[0])


@pytest.mark.tf_only
def test_bird_dcase_crops_and_windows(bird_dir):
    x, y = _collect(bird_dcase(bird_dir, "train", batch_size=8, seed=1))
    assert x.shape == (24, 64, 101, 1) and set(y.tolist()) == {0, 1}
    # Birds (4 kHz) and hums (300 Hz) stay apart after resampling from 44.1 kHz.
    loudest = x[..., 0].mean(axis=2).argmax(axis=1)
    assert np.all(np.abs(loudest - np.where(y == 1, _mel_band(4000), _mel_band(300))) <= 1)
    dataset, clip_ids, labels = bird_dcase_windows(bird_dir, "test", batch_size=4)
    windows, window_labels = _collect(dataset)
    # 3 sets x 1 test clip each; a 2.5 s clip has 2 whole non-overlapping 1 s windows.
    assert windows.shape == (6, 64, 101, 1) and len(np.unique(clip_ids)) == 3
    np.testing.assert_array_equal(window_labels, labels)
    assert np.all(clip_ids[::2] == clip_ids[1::2])
    val = _collect(bird_dcase(bird_dir, "validation"))[0]
    assert val.shape == (6, 64, 101, 1)


def test_clip_level_metrics_average_logits_per_clip():
    clip_ids = np.array(["a", "a", "b", "b", "c"])
    labels = np.array([1, 1, 0, 0, 1])
    logits = np.array([[0.0, 3.0], [0.0, -1.0], [2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    metrics = clip_level_metrics(logits, clip_ids, labels)
    # Clip means: a -> (0, 1) bird, b -> (1, .5) no bird, c -> (1, 0) no bird: 2 of 3 right.
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    # Scores (bird minus no-bird): a 1, b -0.5, c -1; positives a, c; negative b: AUC 1/2.
    assert metrics["roc_auc"] == pytest.approx(0.5)
    single = clip_level_metrics(logits[:, 1] - logits[:, 0], clip_ids, labels)
    assert single == metrics
    with pytest.raises(ValueError, match="differ between windows"):
        clip_level_metrics(logits, clip_ids, np.array([1, 0, 0, 0, 1]))


def test_audio_datasets_feed_model_fit(commands_dir, bird_dir):
    for info in (
        load("speechcommands", commands_dir, batch_size=4),
        load("birddcase", bird_dir, batch_size=4, subset=6),
    ):
        assert info.input_shape == (64, 101, 1)
        model = keras.Sequential(
            [
                keras.Input(info.input_shape),
                keras.layers.Conv2D(2, 3, strides=4),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(info.num_classes),
            ]
        )
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(info.dataset, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
    assert load("speechcommands", commands_dir).num_classes == 4


@pytest.mark.parametrize(
    "poison, message", [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (1e6, "1e\\+06")]
)
def test_read_wav_rejects_corrupt_float_samples(tmp_path, poison, message):
    audio = _tone(440, 0.5, 16000)
    audio[100] = poison
    _write(str(tmp_path / "bad.wav"), audio, 16000, "FLOAT")
    with pytest.raises(DataError, match=f"bad.wav: .*{message}"):
        read_wav(str(tmp_path / "bad.wav"))


def _poison(commands_dir, value):
    """A float WAV in the training split with one corrupt sample; returns its name."""
    audio = _tone(TONES["yes"], 0.5, 16000)
    audio[10] = value
    _write(os.path.join(commands_dir, "yes", "poison_nohash_0.wav"), audio, 16000, "FLOAT")
    return "poison_nohash_0.wav"


@pytest.mark.tf_only
@pytest.mark.parametrize("value", [np.nan, 1e30])
def test_a_corrupt_clip_is_named_or_skipped_never_averaged_in(commands_dir, value):
    name = _poison(commands_dir, value)
    with pytest.raises(DataError, match=f"{name}: .*on_error='skip'"):
        speech_commands(commands_dir, "train")
    x, y = _collect(speech_commands(commands_dir, "train", on_error="skip"))
    assert len(y) == 12 and np.all(np.isfinite(x))
    assert abs(x.mean()) < 1e-4 and abs(x.std() - 1) < 1e-3  # statistics without the clip
    x_val, _ = _collect(speech_commands(commands_dir, "validation", on_error="skip"))
    assert np.all(np.isfinite(x_val))


@pytest.mark.tf_only
def test_stats_cache_follows_the_files_contents(commands_dir):
    """Rewriting a clip with the same size and modification time still invalidates the cache."""
    before, _ = _collect(speech_commands(commands_dir, "validation"))
    path = os.path.join(commands_dir, "yes", "spk0_nohash_0.wav")
    stat = os.stat(path)
    louder = 1.9 * soundfile.read(path, dtype="float32")[0]
    _write(path, louder, RATES["yes"])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.path.getsize(path) == stat.st_size
    after, _ = _collect(speech_commands(commands_dir, "validation"))
    assert not np.allclose(before, after)  # new training statistics normalise differently
    caches = glob.glob(os.path.join(commands_dir, ".keras_topo_stats_*.json"))
    assert len(caches) == 2


@pytest.mark.tf_only
@pytest.mark.parametrize("bad", ['{"mean": NaN, "std": 1.0}', '{"mean": 0.0, "std": 0.0}', "{"])
def test_an_unusable_stats_cache_is_recomputed(commands_dir, bad):
    first, _ = _collect(speech_commands(commands_dir, "validation"))
    (cache,) = glob.glob(os.path.join(commands_dir, ".keras_topo_stats_*.json"))
    with open(cache, "w") as f:
        f.write(bad)
    again, _ = _collect(speech_commands(commands_dir, "validation"))
    np.testing.assert_allclose(again, first, rtol=1e-6)
    assert json.load(open(cache))["std"] > 0  # replaced by good statistics


@pytest.mark.tf_only
def test_an_all_silent_training_set_is_refused(tmp_path):
    root = tmp_path / "silent"
    for i in range(2):
        _write(str(root / "quiet" / f"s{i}_nohash_0.wav"), np.zeros(8000, np.float32), 16000)
    (root / "validation_list.txt").write_text("")
    (root / "testing_list.txt").write_text("")
    with pytest.raises(DataError, match="all equal \\(std 0"):
        speech_commands(str(root), "train")
    assert not glob.glob(str(root / ".keras_topo_stats_*"))


@pytest.mark.tf_only
def test_split_lists_accept_dot_slash_paths(commands_dir):
    with open(os.path.join(commands_dir, "validation_list.txt"), "w") as f:
        f.write("./yes/spk1_nohash_0.wav\n_unknown_//bed_spk1_nohash_0.wav.wav\n")
    _, y_train = _collect(speech_commands(commands_dir, "train"))
    assert len(y_train) == 12  # the listed clips stay out of training
    _, y_val = _collect(speech_commands(commands_dir, "validation"))
    assert sorted(y_val.tolist()) == [1, 3]


@pytest.mark.tf_only
def test_keras_topo_data_imports_without_the_audio_extra(tmp_path):
    """CIFAR needs no soundfile (scipy is a core dependency); reading a WAV then says how to
    install the audio extra."""
    import subprocess

    code = (
        "import sys; sys.modules['soundfile'] = None\n"
        "import keras_topo.data\n"
        "try:\n"
        f"    keras_topo.data.read_wav({str(tmp_path / 'a.wav')!r})\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "pip install 'keras-topo[audio]'" in done.stdout
