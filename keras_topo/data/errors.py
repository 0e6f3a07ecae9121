"""Bad-input handling shared by the loaders: raise naming the file, or skip and count."""

import logging

logger = logging.getLogger("keras_topo.data")

ON_ERROR = ("raise", "skip")


class DataError(ValueError):
    """A data file or folder is missing, unreadable or not in the expected format."""


class BadFiles:
    """Collects bad files under an `on_error` policy.

    `on_error="raise"`: `report(error)` raises the `DataError` (whose message names the file).
    `on_error="skip"`: it records the message; `log_summary(what)` logs how many were skipped.
    """

    def __init__(self, on_error):
        if on_error not in ON_ERROR:
            raise ValueError(f"`on_error` must be one of {ON_ERROR}; received {on_error!r}.")
        self.on_error = on_error
        self.skipped = []

    def report(self, error):
        if self.on_error == "raise":
            raise DataError(f"{error} (pass on_error='skip' to skip bad files)") from error
        self.skipped.append(str(error))

    def log_summary(self, what):
        if not self.skipped:
            return
        shown = "; ".join(self.skipped[:5])
        more = f" (and {len(self.skipped) - 5} more)" if len(self.skipped) > 5 else ""
        logger.warning("%s: skipped %d bad file(s): %s%s", what, len(self.skipped), shown, more)
