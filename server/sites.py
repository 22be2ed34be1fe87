"""Site discovery: who is connected, which center each node is, who trains and who is held out."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from protocol.messages import (
    CONFIG_RECORD,
    METRICS_RECORD,
    SITE_RECORD,
    InfoQuery,
    MessageError,
    SiteInfo,
)

__all__ = ["Sites", "discover_sites", "send"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class Sites:
    """Who is who: node id -> center, the training and the held-out nodes, their counts."""

    centers: dict[int, str]
    train: list[int]
    held_out: list[int]
    info: dict[str, SiteInfo]

    def with_mri(self) -> list[int]:
        return [n for n in self.train if self.info[self.centers[n]].n_mri_train > 0]

    def example_limits(self, phase: str) -> dict[int, float]:
        """Training node -> the most training examples it declared for ``phase`` at discovery."""
        return {n: float(self.info[self.centers[n]].max_train_examples(phase)) for n in self.train}


def send(grid: Grid, nodes: list[int], message_type: str, content: Callable[[int], RecordDict], timeout: float) -> list[Message]:
    """One message per node (``content(node)``), sent together; the replies that came back in ``timeout`` s."""
    messages = [Message(content=content(n), dst_node_id=n, message_type=message_type) for n in nodes]
    return list(grid.send_and_receive(messages, timeout=timeout)) if messages else []


def discover_sites(grid: Grid, *, expected: int, held_out: list[str], timeout: float, log: Log) -> Sites:
    """Wait for ``expected`` nodes, ask each which center it is, split training / held-out.

    A held-out name that matches no connected center stops the run before any training, since
    that center would otherwise train under its real name.
    """
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(nodes)} of {expected} sites connected within {timeout:.0f}s")
        time.sleep(1.0)
    query = RecordDict({CONFIG_RECORD: ConfigRecord(InfoQuery().to_record())})
    centers: dict[int, str] = {}
    info: dict[str, SiteInfo] = {}
    for reply in send(grid, nodes, MessageType.QUERY, lambda _n: query, timeout):
        try:
            if reply.has_error():
                raise MessageError(reply.error.reason)
            site = SiteInfo.from_records(reply.content[SITE_RECORD], reply.content[METRICS_RECORD])
        except (MessageError, KeyError) as exc:
            log(f"  site {reply.metadata.src_node_id} did not identify itself: {exc}")
            continue
        if site.center in info:
            raise ValueError(f"two nodes claim center {site.center!r}")
        centers[reply.metadata.src_node_id] = site.center
        info[site.center] = site
    unknown = sorted(set(held_out) - set(info))
    if unknown:
        raise ValueError(f"held_out_centers names {unknown}, but no connected site is called that; connected centers: "
                         f"{sorted(info)}. Correct the name (a SuperNode's node-config 'center', default its data "
                         "folder's name) so that no held-out hospital trains")
    train = sorted((n for n, c in centers.items() if c not in held_out), key=centers.get)
    held = sorted((n for n, c in centers.items() if c in held_out), key=centers.get)
    if not train:
        raise ValueError("no training site connected")
    return Sites(centers, train, held, info)
