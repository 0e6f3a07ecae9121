"""Streaming statistics of a layer's channels over a data set (numpy, float64 accumulators)."""

import numpy as np


class ChannelStatistics:
    """Accumulates, batch by batch, what the map scores need from `(B, ..., C)` responses.

    - the channels' Pearson correlation over every image and spatial position (the response
      similarity of TDANN's spatial loss), from shifted sums so that large means do not cancel;
    - with labels, each class's mean response per channel (responses averaged over space first).
    """

    def __init__(self, channels):
        self.channels = channels
        self.count = 0
        self.shift = None
        self.sums = np.zeros(channels)
        self.products = np.zeros((channels, channels))
        self.class_sums = {}
        self.class_counts = {}

    def update(self, responses, labels=None):
        """Adds one batch: `responses` `(B, ..., C)` channels_last, `labels` `(B,)` ints or None."""
        responses = np.asarray(responses, dtype="float32")
        samples = responses.reshape(-1, self.channels)
        if self.shift is None:
            self.shift = samples.mean(axis=0)
        shifted = samples - self.shift
        self.count += len(shifted)
        self.sums += shifted.sum(axis=0, dtype="float64")
        self.products += (shifted.T @ shifted).astype("float64")
        if labels is not None:
            per_image = responses.reshape(len(responses), -1, self.channels).mean(axis=1)
            for label in np.unique(labels):
                chosen = per_image[labels == label]
                self.class_sums[label] = self.class_sums.get(label, 0.0) + chosen.sum(
                    axis=0, dtype="float64"
                )
                self.class_counts[label] = self.class_counts.get(label, 0) + len(chosen)

    def correlation(self):
        """Pearson correlation `(C, C)`; a constant channel correlates 0 with every other."""
        mean = self.sums / self.count
        cov = self.products / self.count - np.outer(mean, mean)
        std = np.sqrt(np.maximum(np.diag(cov), 0.0))
        live = std > 1e-12 * max(std.max(), 1e-300)
        safe = np.where(live, std, 1.0)
        corr = cov / np.outer(safe, safe)
        corr[~live, :] = 0.0
        corr[:, ~live] = 0.0
        np.fill_diagonal(corr, 1.0)
        return np.clip(corr, -1.0, 1.0)

    def class_means(self):
        """`(labels, means)`: the sorted labels seen and their mean responses `(K, C)`."""
        labels = sorted(self.class_sums)
        return labels, np.stack([self.class_sums[k] / self.class_counts[k] for k in labels])
