"""Where a train step's time goes: TensorFlow profiler traces summed by op type.

`simsiam-benchmark train --profile LOGDIR` traces the timed steps once more and prints the op
types by their share of the summed op self time (a nested op's time counted once, in the op that
ran it), which is how issue 10 chose what to fuse: Keras' unfused BatchNorm math, then the
convolutions. The trace stays in LOGDIR for TensorBoard's profile plugin.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
from collections import Counter
from typing import Iterator, NamedTuple

import tensorflow as tf

# A TensorFlow op event is named "name_scope/op_name:OpType"; framework events contain "::".
OP_EVENT = re.compile(r"^(.*):([A-Z_][A-Za-z0-9_]*)$")


class OpTime(NamedTuple):
    op_type: str
    seconds: float  # self time, summed over the host's threads
    share: float  # of all op types' summed self time
    count: int


@contextlib.contextmanager
def traced(logdir: str) -> Iterator[None]:
    """Records the TensorFlow profiler's trace of the block into `logdir`."""
    tf.profiler.experimental.start(logdir)
    try:
        yield
    finally:
        tf.profiler.experimental.stop()


def op_time_by_type(logdir: str) -> list[OpTime]:
    """Op self time by op type in the newest trace under `logdir`, largest first."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")))
    if not paths:
        raise FileNotFoundError(f"logdir {logdir}: no profiler trace (plugins/profile/*/*.xplane.pb) in it")
    space = xplane_pb2.XSpace()
    with open(paths[-1], "rb") as f:
        space.ParseFromString(f.read())
    seconds, count = Counter(), Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            events = sorted(((e.offset_ps, e.duration_ps, plane.event_metadata[e.metadata_id].name)
                             for e in line.events), key=lambda e: (e[0], -e[1]))
            open_ops: list[list] = []  # [end, op type, self time] of the ops enclosing this event
            for start, duration, name in events:
                match = OP_EVENT.match(name)
                if "::" in name or not match:
                    continue
                while open_ops and open_ops[-1][0] <= start:
                    _, op_type, own = open_ops.pop()
                    seconds[op_type] += own
                if open_ops:
                    open_ops[-1][2] -= duration
                open_ops.append([start + duration, match.group(2), duration])
                count[match.group(2)] += 1
            for _, op_type, own in open_ops:
                seconds[op_type] += own
    total = sum(seconds.values())
    return [OpTime(op_type, ps / 1e12, ps / total, count[op_type]) for op_type, ps in seconds.most_common()]
