"""How the hub talks to its sites: one exchange over any Flower Grid, and a Grid whose sites run here.

`exchange` pushes instructions and polls for the replies until they are all in or the timeout has
passed; it is the only path the hub uses, whatever the Grid: Flower's simulation engine, a real
SuperLink, or `InProcessGrid`. The in-process Grid runs each site's ClientApp in this process, one
site at a time (deterministic, no start-up cost), in a thread of its own so that a hung site can be
abandoned when the exchange's time is up; its replies are then pulled like any other Grid's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid

_SERVER_NODE_ID = 1  # flwr.common.constant.SUPERLINK_NODE_ID
_POLL = (0.01, 0.5)  # seconds between pulls: starts short, doubles up to 0.5 (Flower's own sleeps 3 s)


def exchange(grid: Grid, messages: list[Message], timeout: float | None) -> list[Message]:
    """Push `messages` (one per site) and pull the replies that arrive within `timeout` seconds."""
    end = None if timeout is None else time.monotonic() + timeout
    ids = list(grid.push_messages(messages))
    pending = {i: m.metadata.dst_node_id for m, i in zip(messages, ids)}
    by_node = {node: i for i, node in pending.items()}
    replies: list[Message] = []
    wait = _POLL[0]
    while pending:
        got = list(grid.pull_messages(list(pending)))
        replies.extend(got)
        for reply in got:
            # the SuperLink's own error replies (a node went offline) come from its node id, not the
            # site's: match a reply by the message it answers, by its sender where a Grid sets no ids
            answered = reply.metadata.reply_to_message_id
            pending.pop(answered if answered in pending else by_node.get(reply.metadata.src_node_id), None)
        if not pending or (end is not None and time.monotonic() >= end):
            break
        time.sleep(wait)
        wait = min(wait * 2, _POLL[1])
    return replies


class InProcessGrid(Grid):
    """A Grid whose sites are ClientApp instances in this process (partition-id = site index).

    `push_messages` runs the sites one after the other, each bounded by what is left of `timeout`
    seconds from the push (None: no bound), and keeps their replies for `pull_messages`.
    """

    def __init__(self, client_app: Any, n_sites: int, run_id: int = 1, timeout: float | None = None) -> None:
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, _SERVER_NODE_ID
        self.client_app = client_app
        self.timeout = timeout
        self.contexts = {
            1000 + k: Context(
                run_id=run_id,
                node_id=1000 + k,
                node_config={"partition-id": k, "num-partitions": n_sites},
                state=RecordDict(),
                run_config={},
            )
            for k in range(n_sites)
        }
        self._replies: dict[str, Message] = {}
        self._count = 0
        self._run = None

    def set_run(self, run: Any) -> None:
        self._run = run

    @property
    def run(self) -> Any:
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def _deliver(self, message: Message, deadline: float | None) -> Message | None:
        """Run the site's ClientApp on `message` (in a thread, so a hung site can be abandoned)."""
        box: dict[str, Message] = {}

        def work() -> None:
            context = self.contexts[message.metadata.dst_node_id]
            try:
                box["reply"] = self.client_app(message, context)
            except Exception as exc:  # a site's failure becomes an error reply, as on a real SuperNode
                box["reply"] = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=message)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        thread.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))
        return box.get("reply")

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        ids = []
        for message in messages:
            self._count += 1
            ids.append(f"m{self._count}")
            reply = self._deliver(message, deadline)
            if reply is not None:
                self._replies[ids[-1]] = reply
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return exchange(self, list(messages), timeout)
