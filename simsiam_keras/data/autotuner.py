"""tf.data without its autotuning thread, for datasets whose iterators are made and freed often."""

from __future__ import annotations

import tensorflow as tf


def without_autotuner(ds: tf.data.Dataset) -> tf.data.Dataset:
    """`ds` without tf.data's autotuning thread (AUTOTUNE then means one map call per core).

    That thread sleeps in periods doubling from 10 ms, and freeing an iterator (every
    `model.fit` does on return) sometimes waits out its current period: on 2 cores, fits of
    8 steps (3.1 s) returned after exactly 5.11 s (10 + 20 + ... + 2560 ms) in 14 of 28 fits
    over 10 processes, and in none of 17 fits (5 processes) without it (issue 26's "slow mode").
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)
