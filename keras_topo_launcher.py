"""The `keras-topo` console script: sets the fast path's process environment, then runs the CLI.

TensorFlow reads `TF_ENABLE_ONEDNN_OPTS` and `TF_CPP_MIN_LOG_LEVEL` once, when it is imported
(measured with TF 2.21: set after `import tensorflow`, they change nothing), and OpenMP reads
`OMP_WAIT_POLICY` when torch loads. Importing any module of the `keras_topo` package first runs
the package's `__init__`, which imports Keras and its backend, and `import keras_topo` leaves
`os.environ` as it was; so the variables are set here, in a module outside the package that
imports nothing heavy, before `keras_topo.cli` is imported.
"""

import contextlib
import os
import sys

# The fast path's variables, each set unless the user's environment has it (an explicit "0" wins):
# - OMP_WAIT_POLICY=PASSIVE: torch's OpenMP threads sleep at barriers instead of spinning (a
#   step 10-30x faster on a CPU shared with other processes);
# - TF_ENABLE_ONEDNN_OPTS=1: TensorFlow's oneDNN kernels, which it turns on by default only on
#   CPUs with AVX-512 VNNI/BF16/AMX (elsewhere a convolution takes a path about 4x slower).
ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE", "TF_ENABLE_ONEDNN_OPTS": "1"}
# The CLI's quiet default: TensorFlow's C++ log lines (device probing, CUDA errors) hidden.
QUIET_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3"}
# The CLI flag that shows TensorFlow's and absl's log lines again.
BACKEND_LOGS_FLAG = "--backend-logs"
# The variables this process set, name -> value (the others are the user's or unset).
applied = {}


def apply_environment(quiet=False):
    """Sets each `ENVIRONMENT` variable (and `QUIET_ENVIRONMENT`'s if `quiet`) that the user has
    not set; returns those it set. Call before TensorFlow or torch is imported."""
    wanted = {**ENVIRONMENT, **(QUIET_ENVIRONMENT if quiet else {})}
    for name, value in wanted.items():
        if name not in os.environ:
            os.environ[name] = value
            applied[name] = value
    return dict(applied)


def main(argv=None):
    """Entry point of `keras-topo`: the environment, then `keras_topo.cli.main(argv)`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    quiet = BACKEND_LOGS_FLAG not in argv
    apply_environment(quiet=quiet)
    # TensorFlow's import-time lines (written before absl's logging is initialised) ignore
    # TF_CPP_MIN_LOG_LEVEL (tensorflow/tensorflow#100442): hide stderr while it loads. It is
    # loaded here on every backend: the data pipelines need it.
    with _stderr_hidden() if quiet else contextlib.nullcontext():
        import tensorflow  # noqa: F401

        from keras_topo import cli
    return cli.main(argv)


@contextlib.contextmanager
def _stderr_hidden():
    """Sends file descriptor 2 (C++ libraries' stderr included) to /dev/null inside the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


if __name__ == "__main__":
    sys.exit(main())
