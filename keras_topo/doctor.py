"""`keras-topo doctor`: what this process trains with, and what to change to train faster.

`facts()` gathers the backend, library versions, CPU features, thread settings and kernel
settings as a dict; `advice(facts)` gives the lines to change; `describe(facts)` formats both.
Importing TensorFlow here (to read its settings) also gives the one `SlowKernelsWarning` of
`keras_topo.experiments.fast_path` when its oneDNN kernels are off.
"""

import importlib.metadata
import importlib.util
import os
import platform

import keras

import keras_topo
from keras_topo.experiments import fast_path

# Distributions whose versions are reported.
LIBRARIES = ("keras", "tensorflow", "jax", "torch", "numpy")
# /proc/cpuinfo flags that decide which kernels a CPU gets (prefixes).
CPU_FEATURE_PREFIXES = ("avx2", "avx512", "amx", "fma")


def facts(cpuinfo_path="/proc/cpuinfo"):
    """The settings of this process, as a JSON-able dict:

    `backend`, `versions` (keras_topo, Python and each installed library of `LIBRARIES`, None
    when absent), `cpu` (`features`: sorted flags of `CPU_FEATURE_PREFIXES`, `cores`: usable
    cores), `threads` (`fast_path.THREAD_VARIABLES` from the environment, TF's inter/intra op thread
    counts, 0 meaning TF's automatic choice; `torch` threads when torch is installed), `kernels`
    (`tf_onednn`, `tf_onednn_origin`, the fast path's `jit_compile`).
    """
    import tensorflow as tf

    fast_path.warn_if_slow_kernels()
    threads = {name: os.environ.get(name) for name in fast_path.THREAD_VARIABLES}
    threads["tf_inter_op"] = tf.config.threading.get_inter_op_parallelism_threads()
    threads["tf_intra_op"] = tf.config.threading.get_intra_op_parallelism_threads()
    if importlib.util.find_spec("torch") is not None:
        import torch

        threads["torch"] = torch.get_num_threads()
    return {
        "backend": keras.backend.backend(),
        "versions": _versions(),
        "cpu": {"features": cpu_features(cpuinfo_path), "cores": len(os.sched_getaffinity(0))},
        "threads": threads,
        "kernels": {
            "tf_onednn": fast_path.tf_onednn_enabled(),
            "tf_onednn_origin": fast_path.onednn_origin(),
            "jit_compile": fast_path.compile_options()["jit_compile"],
        },
    }


def cpu_features(cpuinfo_path="/proc/cpuinfo"):
    """Sorted CPU flags starting with one of `CPU_FEATURE_PREFIXES` ([] where unreadable)."""
    try:
        with open(cpuinfo_path) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    flags = set()
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return sorted(flag for flag in flags if flag.startswith(CPU_FEATURE_PREFIXES))


def advice(facts):
    """The changes that would make this process train faster, one line each ([] if none)."""
    lines = []
    if facts["backend"] == "tensorflow" and facts["kernels"]["tf_onednn"] is False:
        lines.append(
            "export TF_ENABLE_ONEDNN_OPTS=1   # before TensorFlow is imported: TF's oneDNN "
            "kernels (convolutions ~4x faster on CPUs without AVX-512 VNNI)"
        )
    if facts["backend"] == "torch" and facts["threads"]["OMP_WAIT_POLICY"] != "PASSIVE":
        lines.append(
            "export OMP_WAIT_POLICY=PASSIVE   # before torch is imported: OpenMP threads sleep "
            "instead of spinning (10-30x on a shared CPU)"
        )
    return lines


def describe(facts):
    """`facts` and `advice(facts)` as the text `keras-topo doctor` prints."""
    versions = ", ".join(f"{name} {version}" for name, version in facts["versions"].items())
    threads = ", ".join(f"{name}={value}" for name, value in facts["threads"].items())
    kernels = facts["kernels"]
    onednn = {True: "on", False: "OFF", None: "TensorFlow not loaded"}[kernels["tf_onednn"]]
    changes = advice(facts) or ["nothing: this process runs keras-topo's fast path."]
    return "\n".join(
        [
            f"backend: {facts['backend']}",
            f"versions: {versions}",
            f"CPU: {facts['cpu']['cores']} cores, features: "
            f"{' '.join(facts['cpu']['features']) or 'none of ' + str(CPU_FEATURE_PREFIXES)}",
            f"threads: {threads}",
            f"TensorFlow oneDNN kernels: {onednn} ({kernels['tf_onednn_origin']})",
            f"jit_compile of the fast path: {kernels['jit_compile']}",
            "what to change:",
            *(f"  {line}" for line in changes),
        ]
    )


def _versions():
    found = {"keras_topo": keras_topo.__version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found
