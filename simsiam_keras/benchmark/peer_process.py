"""The PyTorch peer's train step (torch_peer.TorchStep) run in a process of its own."""

from __future__ import annotations

import multiprocessing
from typing import Any

from simsiam_keras.benchmark import torch_peer
from simsiam_keras.benchmark.host_memory import HostMemory, measure_host_memory
from simsiam_keras.config import SimSiamConfig


class PeerProcess:
    """The torch peer (torch_peer.TorchStep) in a process of its own, so that each framework's peak memory is its own.

    A spawned child builds the peer when started and times `rate(steps)` when asked, so rounds
    still alternate with ours; `close()` returns the child's HostMemory (its own RSS, measured
    from after its imports, TensorFlow's and torch's) and ends it.
    """

    def __init__(self, config: SimSiamConfig, threads: int, total_steps: int):
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no state of ours, no fork of TF's threads
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve_peer, args=(child, config.to_dict(), threads, total_steps),
                                        name="torch-peer", daemon=True)
        self._process.start()
        child.close()
        self.version: str = self._ask("version")

    def _ask(self, *request: Any) -> Any:
        self._connection.send(request)
        try:
            reply = self._connection.recv()
        except EOFError:
            self._process.join(10)
            raise RuntimeError(f"the torch peer's process ended (exit code {self._process.exitcode})") from None
        if isinstance(reply, Exception):
            raise reply
        return reply

    def rate(self, steps: int) -> float:
        """Images per second of the peer's step over `steps` steps."""
        return self._ask("rate", steps)

    def close(self) -> HostMemory:
        """The child's peak memory; the child ends."""
        memory = self._ask("memory")
        self._process.join(60)
        return memory


def _serve_peer(connection: Any, config: dict[str, Any], threads: int, total_steps: int) -> None:
    """The peer's process: builds the TorchStep, then answers `PeerProcess`'s requests until `memory`."""
    with measure_host_memory() as memory:
        try:
            step = torch_peer.TorchStep(SimSiamConfig.from_dict(config), threads, total_steps)
        except Exception as error:  # sent back whole: the parent raises it
            connection.recv()
            connection.send(error)
            return
        while (request := connection.recv())[0] != "memory":
            connection.send(step.torch.__version__ if request[0] == "version" else step.rate(request[1]))
    connection.send(memory)
