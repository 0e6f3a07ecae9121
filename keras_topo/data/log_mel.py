"""Log-mel front end of the reference (torchaudio MelSpectrogram + AmplitudeToDB), in tf.signal.

16 kHz audio, 25 ms Hann window (400 samples, periodic), 10 ms hop (160), FFT of 400 points,
centred frames (reflect padding of 200 samples), power spectrum, 64 HTK mel bands over
0-8 kHz, then `10 log10(max(power, 1e-10))` dB without a top-dB clip. One second gives 64 x 101.
"""

import tensorflow as tf

from keras_topo.data.audio_io import SAMPLE_RATE

NUM_MELS = 64
WINDOW = 400
HOP = 160
MIN_POWER = 1e-10
MIN_FREQUENCY = 0.0
MAX_FREQUENCY = SAMPLE_RATE / 2
# Every setting the features depend on: part of each feature and statistics cache key.
FRONT_END = {
    "sample_rate": SAMPLE_RATE,
    "n_mels": NUM_MELS,
    "window": WINDOW,
    "window_fn": "hann periodic",
    "hop": HOP,
    "n_fft": WINDOW,
    "center": "reflect",
    "power": 2.0,
    "mel_scale": "htk",
    "fmin": MIN_FREQUENCY,
    "fmax": MAX_FREQUENCY,
    "db": ["10 log10", MIN_POWER],
}


def num_frames(samples):
    """Number of log-mel frames for `samples` samples (centred frames)."""
    return 1 + samples // HOP


@tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)])
def _log_mel(waveforms):
    padded = tf.pad(waveforms, [[0, 0], [WINDOW // 2, WINDOW // 2]], mode="REFLECT")
    stft = tf.signal.stft(
        padded,
        frame_length=WINDOW,
        frame_step=HOP,
        fft_length=WINDOW,
        window_fn=tf.signal.hann_window,
    )
    power = tf.math.square(tf.math.abs(stft))
    mel_matrix = tf.signal.linear_to_mel_weight_matrix(
        NUM_MELS, WINDOW // 2 + 1, SAMPLE_RATE, MIN_FREQUENCY, MAX_FREQUENCY
    )
    mel = tf.tensordot(power, mel_matrix, axes=1)
    decibels = 10.0 * tf.math.log(tf.maximum(mel, MIN_POWER)) / tf.math.log(10.0)
    return tf.transpose(decibels, [0, 2, 1])[..., tf.newaxis]


def log_mel(waveforms):
    """Log-mel features in dB of a batch of 16 kHz waveforms.

    Args:
        waveforms: float array or tensor `(B, samples)`, `samples > 200`.

    Returns:
        float32 tensor `(B, 64, 1 + samples // 160, 1)`: mel bands x frames x 1 channel.
    """
    waveforms = tf.convert_to_tensor(waveforms, tf.float32)
    if waveforms.shape.rank != 2:
        raise ValueError(
            f"`waveforms` must have shape (batch, samples); received shape {waveforms.shape}."
        )
    return _log_mel(waveforms)
