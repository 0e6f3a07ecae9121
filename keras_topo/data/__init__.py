"""tf.data pipelines for the paper's datasets (TensorFlow code; the datasets feed `model.fit`
on every Keras backend).

Entry point for scripts (the experiment runner uses it):

    info = keras_topo.data.load(name, data_dir, split="train", batch_size=128, seed=0,
                                subset=None, **loader_kwargs)
    model = build(info.input_shape, info.num_classes)   # (32, 32, 3) or (64, 101, 1)
    model.fit(info.dataset, ...)

`name`: "cifar10" | "cifar100" | "speechcommands" | "birddcase"; `split`: "train" |
"validation" | "test"; `subset`: a fixed random sample of that many examples (for quick runs).
Batches are `(float32 features, int32 labels)`; training splits are shuffled (deterministic
under `seed`), the others keep a fixed order. Train/validation/test splits never depend on
`seed` (see `split_seed`).

The loaders:
- `cifar(data_dir, dataset, split, ...)`: official python pickles or `train/<class>/*.jpg`;
  `cifar_classes(data_dir, dataset)` gives the class names.
- `speech_commands(data_dir, split, ...)`: Speech Commands layout, any label set;
  `speech_commands_labels(data_dir)` gives the default labels.
- `bird_dcase(data_dir, split, ...)`: random 1 s crops for training, all 1 s windows otherwise;
  `bird_dcase_windows(...)` + `clip_level_metrics(logits, clip_ids, labels)` for clip scores.
- `log_mel(waveforms)`: `(B, samples)` 16 kHz -> `(B, 64, frames, 1)` dB (the reference's
  front end); `read_wav(path)` reads, checks and resamples one file.
Audio features are decoded once and cached on disk (`feature_cache=True`: in `data_dir`, or
`$KERAS_TOPO_CACHE_DIR` when read-only), keyed on the files' contents and every front-end
setting; later loads read the cache. Bad files raise `DataError` naming them, or are skipped
and counted with `on_error="skip"`.
Nothing is downloaded unless `download=True` (CIFAR and Speech Commands).
"""

from keras_topo.data.audio_io import read_wav
from keras_topo.data.bird_dcase import bird_dcase, bird_dcase_windows, clip_level_metrics
from keras_topo.data.cifar import cifar, cifar_classes
from keras_topo.data.errors import DataError
from keras_topo.data.loader import DatasetInfo, load
from keras_topo.data.log_mel import log_mel
from keras_topo.data.speech_commands import speech_commands, speech_commands_labels

__all__ = [
    "DataError",
    "DatasetInfo",
    "bird_dcase",
    "bird_dcase_windows",
    "cifar",
    "cifar_classes",
    "clip_level_metrics",
    "load",
    "log_mel",
    "read_wav",
    "speech_commands",
    "speech_commands_labels",
]
