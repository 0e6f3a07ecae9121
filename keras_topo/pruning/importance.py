"""Which output channels of a conv layer to prune: scores and the rounding rule."""

import numpy as np

CRITERIA = ("l2", "l1", "random")


def channel_scores(kernel, criterion, rng):
    """Importance of each output channel of a conv kernel `(kh, kw, C_in, C_out)` -> `(C_out,)`.

    "l2" / "l1": the norm of the channel's filter (all of its kernel weights, bias excluded),
    as `torch.nn.utils.prune.LnStructured(n=2 or 1, dim=0)` in the paper's reference code.
    "random": uniform scores from `rng` (the paper's control).
    """
    flat = np.asarray(kernel, dtype="float64").reshape(-1, kernel.shape[-1])
    if criterion == "l2":
        return np.sqrt((flat**2).sum(axis=0))
    if criterion == "l1":
        return np.abs(flat).sum(axis=0)
    if criterion == "random":
        return rng.random(flat.shape[1])
    raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}.")


def pruned_count(channels, fraction):
    """How many of `channels` to prune: `round(fraction * channels)`, at most `channels - 1`.

    Python's `round` (half to even) is what `torch.nn.utils.prune` applies to a float
    `amount`, so counts equal the reference code's; one channel always stays.
    """
    return min(round(fraction * channels), channels - 1)


def kept_channels(scores, fraction):
    """Sorted indices of the channels that stay: all but the `pruned_count` lowest scores.

    Ties are broken by index (the lower index is pruned first), so results are deterministic.
    """
    scores = np.asarray(scores)
    order = np.argsort(scores, kind="stable")
    return np.sort(order[pruned_count(scores.size, fraction) :])
