"""Data-parallel training through the engines Keras already provides, one name per backend.

- `none`: one device (TF: the default strategy).
- `data_parallel` (synonym `mirrored`): all local devices of the default type (GPUs, else
  CPUs; on TF logical CPUs count, see `tf.config.set_logical_device_configuration`), with
  `keras.distribution.DataParallel` on JAX and `tf.distribute.MirroredStrategy` on TF.
- `multiworker`: TF only, `tf.distribute.MultiWorkerMirroredStrategy` configured from the
  `TF_CONFIG` environment variable. (On JAX, call `keras.distribution.initialize()` in every
  process and use `data_parallel`, which then spans all processes' devices.)
- `auto`: TF: `multiworker` if `TF_CONFIG` names several workers, else `data_parallel` if
  there are several devices, else `none`; JAX: `data_parallel` if several devices, else
  `none`; torch: `none`.
On torch, `data_parallel`, `mirrored` and `multiworker` raise ValueError.

Both engines keep one copy of the weights per device, split each global batch across the
devices and average the gradients, so a step on `N` devices equals a step on one device on
the same global batch (batch sizes stay global: give `fit` the same `batch_size`). Keras
scales compiled losses and `add_loss` terms (the topographic loss) by `1 / N` per replica
on TensorFlow, so they stay means over the global batch, not sums over replicas; on JAX the
step is one global computation (batch norm included). Checked on 4 CPU devices in
tests/test_distribute.py. Caveats (Keras 3.15, TF 2.21):
- JAX: every batch must divide by `N` (drop the last partial batch), or sharding fails.
- TF: `BatchNormalization` uses each replica's own statistics unless `synchronized=True`;
  and with `synchronized=True` after an `add_loss` layer, Keras loses all but one replica's
  layer losses (layer losses are one Python list shared by the replica threads, and the
  batch norm all-reduce interleaves them). Exact equality also needs a global batch that
  divides evenly across replicas.
- TF `multiworker`: the strategy must be created before any other TensorFlow work, and
  Keras 3's `fit` under it currently fails (keras-team/keras#20585).

The torch backend of Keras has no data-parallel engine (torch DDP needs a hand-written
loop), so it trains on one device.
"""

import contextlib
import json
import os
import warnings

import keras

NAMES = ("none", "auto", "data_parallel", "mirrored", "multiworker")


@contextlib.contextmanager
def distribution_scope(name="none"):
    """Context in which to build, compile AND fit/evaluate a model for data-parallel training.

    Args:
        name: one of "none", "auto", "data_parallel", "mirrored" (a synonym of
            "data_parallel"), "multiworker"; see the module docstring for what each means on
            each backend.

    Yields:
        The engine in use: a `keras.distribution.DataParallel` (JAX), a `tf.distribute.Strategy`
        (TensorFlow), or `None` (one device). `num_replicas(engine)` gives its device count.

    Raises:
        ValueError: an unknown name, or a name the current backend cannot honour.

    Batch sizes stay global (on JAX every batch must divide by the replica count: drop the
    last partial batch). On exit the previous distribution (JAX) or strategy (TensorFlow) is
    current again.
    TensorFlow models remember their strategy, but JAX models read the current distribution
    when they train, so keep `fit` and `evaluate` inside the scope as well.
    """
    engine = _make_engine(resolve(name))
    if engine is None:
        yield None
    else:
        with engine.scope():
            yield engine


def resolve(name):
    """The concrete engine name ("none", "data_parallel" or "multiworker") that `name` means
    on the current backend and devices."""
    if name not in NAMES:
        raise ValueError(f"distribute must be one of {', '.join(NAMES)}; got {name!r}.")
    backend = keras.backend.backend()
    if name == "mirrored":
        name = "data_parallel"
    if name == "auto":
        return _auto(backend)
    if name == "none":
        return name
    if backend == "torch":
        raise ValueError(
            f"distribute={name!r} is not available on the torch backend: Keras has no "
            "data-parallel engine for torch. Use distribute='none' (one device), or the jax or "
            "tensorflow backend (KERAS_BACKEND=jax|tensorflow) for data-parallel training."
        )
    if name == "multiworker" and backend != "tensorflow":
        raise ValueError(
            "distribute='multiworker' is for the tensorflow backend (TF_CONFIG). On jax, call "
            "keras.distribution.initialize() in every process, then use "
            "distribute='data_parallel', which then spans all processes' devices."
        )
    if name == "multiworker" and not _tf_config_workers():
        raise ValueError(
            "distribute='multiworker' needs the TF_CONFIG environment variable (cluster and "
            "task as JSON); see tf.distribute.MultiWorkerMirroredStrategy."
        )
    return name


def num_replicas(engine):
    """Number of devices that `engine` (a value yielded by `distribution_scope`) trains on."""
    if engine is None:
        return 1
    if isinstance(engine, keras.distribution.DataParallel):
        return engine.num_model_replicas
    return engine.num_replicas_in_sync


def _auto(backend):
    if backend == "tensorflow":
        if _tf_config_workers() > 1:
            return "multiworker"
        return "data_parallel" if len(_tf_devices()) > 1 else "none"
    if backend == "jax":
        return "data_parallel" if keras.distribution.get_device_count() > 1 else "none"
    if backend == "torch":
        import torch

        if torch.cuda.device_count() > 1:
            warnings.warn(
                f"{torch.cuda.device_count()} GPUs are visible but the torch backend of Keras "
                "trains on one; use the jax or tensorflow backend for data-parallel training.",
                stacklevel=3,
            )
    return "none"


def _make_engine(concrete):
    if concrete == "none":
        return None
    if keras.backend.backend() == "jax":
        return keras.distribution.DataParallel()
    import tensorflow as tf

    if concrete == "multiworker":
        try:
            return tf.distribute.MultiWorkerMirroredStrategy(
                cluster_resolver=tf.distribute.cluster_resolver.TFConfigClusterResolver()
            )
        except RuntimeError as error:
            raise ValueError(
                "distribute='multiworker' must be entered before any TensorFlow work in the "
                f"process (building a model, a tf.data pipeline): {error}"
            ) from None
    return tf.distribute.MirroredStrategy(devices=_tf_devices())


def _tf_devices():
    """Logical GPUs if any, else logical CPUs (`tf.config.set_logical_device_configuration`
    splits one CPU into several for tests)."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def _tf_config_workers():
    """Number of workers (chief included) named in TF_CONFIG; 0 when it is unset."""
    config = os.environ.get("TF_CONFIG")
    if not config:
        return 0
    try:
        cluster = json.loads(config).get("cluster", {})
    except (ValueError, AttributeError) as error:
        raise ValueError(f"TF_CONFIG is not a JSON object with a 'cluster': {error}") from None
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))
