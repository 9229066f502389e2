"""Preemption notices: a signal stops training after the current step, backed up, with a status a wrapper can requeue on.

Spot VMs, Kubernetes evictions and SLURM (`--signal`) send SIGTERM, or a chosen signal, some
seconds before they kill. `PreemptionSignals` replaces the handlers of those signals with one
that only records the signal; `StopOnSignal`, a Keras callback, looks at that record after each
step (or each `steps_per_execution` block, the only points Keras calls back), and stops training
there: it calls the `back_up` it was given and raises `Preempted`. A second signal during
the backup is recorded and ignored, so it cannot interrupt the write.

Every worker of a job must stop at the same step, and under multi-worker training only one of
them may have received the signal: the callback sums a one-hot vector of the signals received
over every replica of the strategy (one small all-reduce per step or block), so all workers see
the same result at the same step.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable

import keras
import tensorflow as tf

# The signals a preemption notice arrives as, unless `preemption_signal` names another.
DEFAULT_SIGNALS = ("SIGTERM", "SIGINT")


class Preempted(RuntimeError):
    """Training stopped on a signal after a backup at epoch `epoch` (1-based), step `step` of it.

    `exit_status` is the shell's convention for death by that signal, 128 + its number (143
    for SIGTERM, 130 for SIGINT): a wrapper that requeues a job killed by SIGTERM requeues this one.
    """

    def __init__(self, signum: int, epoch: int, step: int):
        self.signum, self.epoch, self.step = signum, epoch, step
        super().__init__(f"preempted at epoch {epoch}, step {step}: backed up; run the same command to resume")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def signal_number(name: str) -> int:
    """The number of the signal `name` names (SIGUSR1, USR1, or a number); ValueError otherwise."""
    text = str(name).strip().upper()
    if text.isdigit():
        number = int(text) if int(text) in set(signal.valid_signals()) else None
    else:
        found = getattr(signal.Signals, text if text.startswith("SIG") else f"SIG{text}", None)
        number = int(found) if found is not None else None
    if number is not None and number not in (signal.SIGKILL, signal.SIGSTOP):
        return number
    raise ValueError(f"preemption_signal {name!r} is not a signal a process can handle on this system (e.g. SIGUSR1)")


class PreemptionSignals(contextlib.AbstractContextManager):
    """While entered, SIGTERM, SIGINT and `extra` (a name) only record that they arrived.

    `received` is the first signal's number (None before one). Handlers can only be set from the
    main thread: elsewhere (a notebook's background thread) nothing is installed and signals keep
    their usual effect. The previous handlers come back on exit.
    """

    def __init__(self, extra: str | None = None):
        names = list(DEFAULT_SIGNALS) + ([extra] if extra else [])
        self.signals = sorted({signal_number(name) for name in names})
        self.received: int | None = None
        self.count = 0
        self._previous: dict[int, object] = {}

    def _record(self, signum: int, frame) -> None:
        self.count += 1
        if self.received is None:
            self.received = signum

    def __enter__(self) -> "PreemptionSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


# One more than the highest signal number, so any signal fits in the vector that is all-reduced.
_NSIG = max(int(s) for s in signal.valid_signals()) + 1


def _agreement(strategy: tf.distribute.Strategy | None) -> Callable[[int | None], int | None]:
    """A function from this process's signal (or None) to the job's: the highest signal any worker got."""
    # `_in_multi_worker_mode` is how Keras itself tells several processes apart (no public API says it).
    if strategy is None or not getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)():
        # One process holds every replica: what it received is what the job received.
        return lambda received: received

    @tf.function
    def all_received(one_hot: tf.Tensor) -> tf.Tensor:
        def replica_fn():
            # A copy on the replica's device: the input itself has none, and a collective needs one.
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(one_hot))

        return strategy.experimental_local_results(strategy.run(replica_fn))[0]

    def agree(received: int | None) -> int | None:
        one_hot = tf.one_hot(received if received is not None else -1, _NSIG, dtype=tf.float32)
        total = all_received(one_hot).numpy()
        got = [signum for signum in range(_NSIG) if total[signum] > 0]
        return got[-1] if got else None

    return agree


class StopOnSignal(keras.callbacks.Callback):
    """Stops `fit` at the first step (or block) after a recorded signal: `back_up()`, then `Preempted`.

    `back_up` backs the run up where it stands and returns that place as (epoch, step), epoch
    1-based, for the message. Put this callback last: the step's other callbacks (a scheduled
    backup among them) have run. On the last step of an epoch the epoch ends first (its history
    row and epoch-end backup are written by their callbacks) and the stop comes after it.
    Under a strategy with several workers, every worker must use this callback: they all take
    part in the per-step all-reduce.
    """

    def __init__(self, signals: PreemptionSignals, back_up: Callable[[], tuple[int, int]],
                 strategy: tf.distribute.Strategy | None = None):
        super().__init__()
        self.signals = signals
        self.back_up = back_up
        self.agree = _agreement(strategy)
        self._pending: int | None = None

    def _stop(self, signum: int) -> None:
        epoch, step = self.back_up()
        raise Preempted(signum, epoch, step)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        signum = self.agree(self.signals.received)
        if signum is None:
            return
        if batch + 1 >= self.params.get("steps", 0) > 0:
            self._pending = signum  # the epoch's last step: let the epoch end first
        else:
            self._stop(signum)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        signum = self._pending if self._pending is not None else self.agree(self.signals.received)
        self._pending = None
        if signum is not None:
            self._stop(signum)

