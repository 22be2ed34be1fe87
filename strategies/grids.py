"""Views of a Flower Grid that the wrapper hands to Flower's strategies: one that lists only a
phase's nodes (whom the inner strategy may sample), and one that refuses to send a train message
to any other node and reports who got one (the held-out guarantee, independent of sampling)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flwr.app import Message, MessageType
from flwr.serverapp import Grid

__all__ = ["GridView", "NodeSubsetGrid", "TrainGuardGrid", "TrainMessageRefused"]


class TrainMessageRefused(RuntimeError):
    """A train message addressed to a node that may not train in the phase (e.g. held out)."""


class GridView(Grid):
    """A Grid that forwards everything to ``grid``; subclasses change one behaviour."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid

    def set_run(self, run) -> None:  # noqa: ANN001
        self._grid.set_run(run)

    @property
    def run(self):  # noqa: ANN201
        return self._grid.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: ANN001,ANN201
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self._grid.send_and_receive(messages, timeout=timeout)


class NodeSubsetGrid(GridView):
    """A Grid whose ``get_node_ids`` lists only ``allowed`` (and connected) nodes."""

    def __init__(self, grid: Grid, allowed: Iterable[int]) -> None:
        super().__init__(grid)
        self._allowed = set(allowed)

    def get_node_ids(self) -> Iterable[int]:
        return sorted(n for n in self._grid.get_node_ids() if n in self._allowed)


class TrainGuardGrid(GridView):
    """A Grid that sends train messages only to ``allowed`` nodes and reports who got them.

    The last line of defence for held-out centers: whatever built the messages, a train message
    to another node raises :class:`TrainMessageRefused` before anything of the batch is sent.
    ``on_train(node ids)`` is called with the destinations of every batch of train messages.
    """

    def __init__(self, grid: Grid, allowed: Iterable[int], on_train: Callable[[list[int]], None],
                 describe: Callable[[int], str]) -> None:
        super().__init__(grid)
        self._allowed = set(allowed)
        self._on_train = on_train
        self._describe = describe

    def _checked(self, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        destinations = [m.metadata.dst_node_id for m in messages if m.metadata.message_type == MessageType.TRAIN]
        refused = sorted(self._describe(n) for n in destinations if n not in self._allowed)
        if refused:
            raise TrainMessageRefused(f"a train message was addressed to {refused}, which may not train in this phase "
                                      "(held out, or not a training site of it); nothing was sent")
        if destinations:
            self._on_train(destinations)
        return messages

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(self._checked(messages))

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self._grid.send_and_receive(self._checked(messages), timeout=timeout)
