"""The paper's loss written independently as a per-pair loop, for tests."""

import numpy as np


def reference_loss(y, pos, distance="euclidean"):
    """Paper eq. 1 with explicit loops, float64. y: (B, H, W, C)."""
    batch, channels = y.shape[0], y.shape[-1]
    losses = []
    for b in range(batch):
        flat = y[b].reshape(-1, channels).T.astype("float64")
        terms = []
        for i in range(channels):
            for j in range(i + 1, channels):
                norm = max(np.linalg.norm(flat[i]) * np.linalg.norm(flat[j]), 1e-8)
                sim = flat[i] @ flat[j] / norm
                diff = pos[i] - pos[j]
                dist = np.abs(diff).sum() if distance == "l1" else np.sqrt((diff**2).sum())
                terms.append((sim - 1 / (dist + 1)) ** 2)
        losses.append(np.mean(terms))
    return np.mean(losses)
