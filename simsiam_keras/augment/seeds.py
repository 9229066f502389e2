"""Per-image randomness for the augmentations: stateless seeds, split and consumed in graph mode.

Every random parameter of a view comes from stateless random ops driven by a ``seed`` tensor of
shape [2] (int32 or int64), so each image and each view gets its own draws and a run is
reproducible from its seeds alone (RECIPE: "every random parameter must be drawn per image").
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf


def split_seed(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    """``num`` independent [2] seeds derived from ``seed``."""
    # stateless_split's output depends on the seed dtype; int64 makes [a, b] mean one thing.
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=num)
    return [seeds[i] for i in range(num)]


def random_apply(
    fn: Callable[[tf.Tensor], tf.Tensor], prob: float | tf.Tensor, image: tf.Tensor, seed: tf.Tensor
) -> tf.Tensor:
    """``fn(image)`` with probability ``prob``, else ``image`` (only the taken branch runs)."""
    if isinstance(prob, (int, float)):
        if prob <= 0:
            return image
        if prob >= 1:
            return fn(image)
    apply = tf.random.stateless_uniform([], seed) < prob
    return tf.cond(apply, lambda: fn(image), lambda: image)




# -------------------------------------------------------------- batched draws
#
# `--augment-on device` draws the same parameters for a whole batch of view seeds at once.
# TensorFlow's stateless ops take one seed per call, and `tf.vectorized_map` runs them in a
# loop (pfor has no vectorised stateless random ops). So the draws below compute TF's own
# stateless algorithm, Philox-4x32-10 (Salmon et al., SC11) with TF's seed scrambling, on
# tensors of seeds: `split_seeds(seeds, n)[..., i, :]` equals `split_seed(seed, n)[i]` and
# `uniform_rows(seeds, n)` equals `tf.random.stateless_uniform([n], seed)` bit for bit for
# every [2] seed of `seeds`, on every device and under XLA (where TF's own ops may pick
# another algorithm; XLA also fuses the multiply-add that moves a draw to [minval, maxval), which
# may round that last step one float32 ulp differently). The 32-bit words are held in uint64, so
# the products of two words need no tricks.

_MASK32 = 0xFFFFFFFF
_PHILOX_M = (0xD2511F53, 0xCD9E8D57)
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)
_PHILOX_ROUNDS = 10
# TF's key for scrambling a seed into the key and counter of its stream.
_SEED_KEY = (0x3EC8F720, 0x02461E29)


def _u64(value: int) -> tf.Tensor:
    return tf.constant(value, tf.uint64)


def _philox(counter: list[tf.Tensor], key: list[tf.Tensor]) -> list[tf.Tensor]:
    """One Philox-4x32-10 block per element: 4 words from a 4-word counter and a 2-word key (all one shape).

    The ten rounds run in a `tf.while_loop`: a graph of a few ops instead of a few hundred, which
    XLA and Grappler take seconds less to compile.
    """
    mask, shift = _u64(_MASK32), _u64(32)
    m0, m1, w0, w1 = (_u64(v) for v in (*_PHILOX_M, *_PHILOX_W))

    def round_(i, c0, c1, c2, c3, k0, k1):
        product0, product1 = c0 * m0, c2 * m1
        high0, high1 = tf.bitwise.right_shift(product0, shift), tf.bitwise.right_shift(product1, shift)
        return (i + 1, high1 ^ c1 ^ k0, product1 & mask, high0 ^ c3 ^ k1, product0 & mask,
                (k0 + w0) & mask, (k1 + w1) & mask)

    state = tf.while_loop(lambda i, *_: i < _PHILOX_ROUNDS, round_, (tf.constant(0), *counter, *key))
    return list(state[1:5])


def _random_words(seeds: tf.Tensor, blocks: int) -> tf.Tensor:
    """[..., 4 x blocks] 32-bit words (uint64) of the stream of each [2] seed of `seeds` [..., 2], as TF draws them."""
    seeds = tf.bitcast(tf.cast(seeds, tf.int64), tf.uint64)[..., tf.newaxis]  # [..., 2, 1]
    mask, shift = _u64(_MASK32), _u64(32)
    s0, s1 = seeds[..., 0, :], seeds[..., 1, :]
    counter = [s0 & mask, tf.bitwise.right_shift(s0, shift), s1 & mask, tf.bitwise.right_shift(s1, shift)]
    zero = tf.zeros_like(s0)
    mix = _philox(counter, [zero + _u64(_SEED_KEY[0]), zero + _u64(_SEED_KEY[1])])
    # Block b of the stream: the counter (0, 0, mix[2], mix[3]) plus b, as a 128-bit number.
    blocks_zero = zero + tf.zeros([blocks], tf.uint64)  # [..., blocks]
    block = blocks_zero + tf.constant(np.arange(blocks, dtype=np.uint64))
    counter = [block, blocks_zero, mix[2] + blocks_zero, mix[3] + blocks_zero]
    words = tf.stack(_philox(counter, [mix[0] + blocks_zero, mix[1] + blocks_zero]), axis=-1)  # [..., blocks, 4]
    return tf.reshape(words, tf.concat([tf.shape(words)[:-2], [4 * blocks]], 0))


def split_seeds(seeds: tf.Tensor, num: int) -> list[tf.Tensor]:
    """`split_seed` of each [2] seed of `seeds` [..., 2]: `num` int64 tensors [..., 2]."""
    words = _random_words(seeds, num)  # one block, two int64 values, per new seed
    values = tf.bitcast(words[..., 0::2] | tf.bitwise.left_shift(words[..., 1::2], _u64(32)), tf.int64)
    values = tf.reshape(values, tf.concat([tf.shape(values)[:-1], [num, 2]], 0))
    return tf.unstack(values, num=num, axis=-2)


def uniform_rows(seeds: tf.Tensor, n: int, minval: float = 0.0, maxval: float = 1.0) -> tf.Tensor:
    """[..., n] float32: `tf.random.stateless_uniform([n], seed, minval, maxval)` of each [2] seed of `seeds`."""
    words = _random_words(seeds, -(-n // 4))[..., :n]
    # TF's float from 23 random mantissa bits: [1, 2) minus 1.
    mantissa = tf.cast(words & _u64(0x7FFFFF), tf.int32) | 0x3F800000
    return scale_uniform(tf.bitcast(mantissa, tf.float32) - 1.0, minval, maxval)


def scale_uniform(unit: tf.Tensor, minval: float, maxval: float) -> tf.Tensor:
    """Uniform draws in [0, 1) moved to [minval, maxval) with the float ops `tf.random.stateless_uniform` uses."""
    if (minval, maxval) == (0.0, 1.0):
        return unit
    low = tf.constant(minval, tf.float32)
    return unit * (tf.constant(maxval, tf.float32) - low) + low
