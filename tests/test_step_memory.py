"""The train step's host memory is reserved in one allocator region before the first step."""

import keras
import tensorflow as tf

from simsiam_keras.train.step_memory import forward_bytes, reserve_step_memory


def _tiny_backbone() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.ReLU()(keras.layers.Conv2D(4, 3, padding="same")(inputs))
    return keras.Model(inputs, outputs)


def test_forward_bytes_counts_every_layer_output_of_both_views():
    # input 8x8x3, conv and ReLU 8x8x4 each, float32, 10 images, two views
    assert forward_bytes(_tiny_backbone(), 10) == (8 * 8 * 3 + 2 * 8 * 8 * 4) * 4 * 10 * 2


def _peak_rise(measured) -> int:
    """How far the host allocator's peak rose above its bytes in use while `measured()` ran (tensors
    that earlier tests in this process still hold are in use, not risen)."""
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    measured()
    return tf.config.experimental.get_memory_info("CPU:0")["peak"] - before


def test_the_reservation_reaches_the_host_allocator():
    backbone = _tiny_backbone()
    batch = 20_000  # 113 MB: far above anything else this test allocates
    reserved = []
    rise = _peak_rise(lambda: reserved.append(reserve_step_memory(backbone, batch, tf.distribute.get_strategy())))
    assert reserved[0] >= forward_bytes(backbone, batch)
    assert rise >= reserved[0]


def test_no_reservation_beyond_half_of_what_the_allocator_may_hold(monkeypatch):
    """Past its limit the allocator would log an out-of-memory warning and a dump: nothing is asked."""
    backbone = _tiny_backbone()
    monkeypatch.setenv("TF_MKL_ALLOC_MAX_BYTES", str(2 * forward_bytes(backbone, 20_000) - 2))
    reserved = []
    rise = _peak_rise(lambda: reserved.append(reserve_step_memory(backbone, 20_000, tf.distribute.get_strategy())))
    assert reserved == [0]
    assert rise < forward_bytes(backbone, 20_000)
