"""Choosing a tf.distribute strategy: one device, several GPUs, several hosts, or TPUs."""

from __future__ import annotations

import hashlib
import json
import os

import keras
import tensorflow as tf

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")


def split_cpu(replicas: int) -> None:
    """Splits the CPU into `replicas` logical devices, so multi-replica code runs without GPUs.

    Must run before TensorFlow initialises its devices.
    """
    if replicas <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    existing = tf.config.get_logical_device_configuration(cpus[0])
    if existing is not None and len(existing) == replicas:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
        )
    except RuntimeError:
        raise RuntimeError(
            f"cpu_replicas {replicas}: TensorFlow was already initialised; split the CPU before building anything"
        ) from None


def make_strategy(name: str = "auto", cpu_replicas: int = 0, tpu: str | None = None) -> tf.distribute.Strategy:
    """The strategy `name` names; `auto` picks TPU, multi-worker, mirrored GPUs/CPUs or one device."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    split_cpu(cpu_replicas)
    if name == "auto":
        if tpu is not None:
            name = "tpu"
        elif "TF_CONFIG" in os.environ and json.loads(os.environ["TF_CONFIG"]).get("cluster"):
            name = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1 or cpu_replicas > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def all_gpus(strategy: tf.distribute.Strategy) -> bool:
    """Whether every device this process trains on is a GPU."""
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy has no device list
        return False
    return bool(devices) and all("GPU" in device.upper() for device in devices)


def check_batch_size(global_batch: int, replicas: int) -> int:
    """The per-replica batch; a global batch that does not split evenly is an error."""
    if global_batch <= 0 or global_batch % replicas:
        raise ValueError(
            f"batch_size {global_batch} does not divide by the {replicas} replicas in sync: "
            f"use a multiple of {replicas}"
        )
    return global_batch // replicas


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files: always, except on non-chief multi-worker tasks.

    The chief is the `chief` task if the cluster has one, else worker 0 (TF's convention).
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    if resolver.task_type is None or resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def weights_fingerprint(model) -> str:
    """A short hash of every weight's value: the workers of one run must print the same one."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(weight.path.encode())
        digest.update(keras.ops.convert_to_numpy(weight.value).tobytes())
    return digest.hexdigest()[:16]
