"""Host memory for a train step on CPUs: one allocator region large enough for the whole step.

With oneDNN on, TensorFlow's CPU tensors come from a best-fit allocator (BFC) that grows by
regions of doubling size (2 MB, 4 MB, ... ), never returns them, and cannot place a tensor across
two regions. A step whose live tensors nearly fill the regions the first step created can then
miss a free block of the right size at a later step, when its ops free and allocate in another
order, and grows one more region: ResNet-50 at batch 32 added 7.5 GB in some runs and 9.1 GB in
others, the growing step 40% slower (docs/benchmarks.md#host-memory-of-the-step). Reserving, before
the first step, one region that holds every tensor the two forward passes produce lets the step
reuse the same pages every time. Only touched pages are resident: the reservation costs its
allocator's bookkeeping, 1/32 of the region.
"""

from __future__ import annotations

import os

import numpy as np
import keras
import tensorflow as tf

VIEWS = 2


def forward_bytes(backbone: keras.Model, batch_size: int) -> int:
    """Bytes of every layer output of `backbone`'s forward pass over both views of a batch."""
    total = 0
    for layer in backbone.layers:
        for output in tf.nest.flatten(layer.output):
            total += int(np.prod(output.shape[1:])) * np.dtype(keras.backend.standardize_dtype(output.dtype)).itemsize
    return total * batch_size * VIEWS


def trains_on_host(strategy: tf.distribute.Strategy) -> bool:
    """Whether the step's tensors live in host memory: no GPU in the process, no TPU strategy."""
    return not tf.config.list_logical_devices("GPU") and not isinstance(strategy, tf.distribute.TPUStrategy)


def allocator_limit() -> int:
    """Bytes TensorFlow's oneDNN CPU allocator may hold: TF_MKL_ALLOC_MAX_BYTES, else the machine's memory."""
    limit = os.environ.get("TF_MKL_ALLOC_MAX_BYTES")
    return int(limit) if limit else os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def reserve_step_memory(backbone: keras.Model, batch_size: int, strategy: tf.distribute.Strategy) -> int:
    """Has the host allocator create one region for a step over `batch_size` images; returns its bytes.

    Allocates `forward_bytes` without touching them and frees them, so the region stays
    reserved in the allocator and later steps' tensors fit in it. 0 when the step does not run
    on the host, or when that is more than half of `allocator_limit` (the allocator would refuse
    it, with a warning, or leave little for anything else): the allocator then grows as it needs.
    """
    if not trains_on_host(strategy):
        return 0
    size = forward_bytes(backbone, batch_size)
    if size > allocator_limit() // 2:
        return 0
    rows = -(-size // 2**20)
    try:
        with tf.device("CPU:0"):
            reserved = tf.raw_ops.Empty(shape=[rows, 2**18], dtype=tf.float32, init=False)
    except tf.errors.ResourceExhaustedError:
        return 0
    del reserved
    return rows * 2**20
