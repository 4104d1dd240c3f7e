"""The ``inprocess`` runtime: a Flower ``Grid`` that calls the ClientApp directly.

Each message is handed to ``client_app(message, context)`` in this process, one
persistent ``Context`` per node (so ``context.state`` lives across rounds, as on
a SuperNode), with no serialisation, no threads and no copies: the content a
strategy builds is the content the client reads. Replies come back in the order
the messages were pushed. A client that raises gets an error reply, as in Flower.
"""

from __future__ import annotations

import itertools
import traceback
from collections.abc import Callable, Iterable

from flwr.app import Context, Error, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

#: Flower's code for "the ClientApp raised an exception".
CLIENT_APP_RAISED_EXCEPTION = 2
#: Flower's node id of the SuperLink (the sender of instructions).
SUPERLINK_NODE_ID = 1
#: Node ids are partition id + this offset (clear of Flower's reserved ids).
NODE_ID_OFFSET = 1000
#: Answers several train messages at once (one reply each, in order), or None to decline.
CohortHook = Callable[[list[Message], list[Context]], list[Message] | None]


class LocalGrid(Grid):
    """A Grid whose nodes are partitions 0..N-1 of this machine, always connected.

    Subclasses say how a batch of messages is executed (:meth:`deliver`); replies come
    back in the order the messages were pushed.
    """

    def __init__(self, num_nodes: int, run_id: int = 1) -> None:
        self._run = Run.create_empty(run_id)
        self._num_nodes = num_nodes
        self._ids = itertools.count(1)
        self._replies: dict[str, Message] = {}
        #: told (replies so far, messages in the batch) as a batch is answered
        self.on_progress: Callable[[int, int], None] | None = None
        # The identity Flower gives the process that runs a ServerApp.
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID

    # -- Grid interface ---------------------------------------------------------------

    def set_run(self, run: Run) -> None:
        """Adopt a run (its id is stamped on messages)."""
        self._run = run

    @property
    def run(self) -> Run:
        """The current run."""
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """A new instruction message."""
        return Message(
            content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl
        )

    def get_node_ids(self) -> Iterable[int]:
        """Every node (all are always connected)."""
        return [pid + NODE_ID_OFFSET for pid in range(self._num_nodes)]

    def partition_nodes(self) -> dict[int, int]:
        """Partition id -> node id: the server knows the layout without asking the nodes."""
        return {pid: pid + NODE_ID_OFFSET for pid in range(self._num_nodes)}

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Execute the messages now; keep their replies until pulled."""
        batch = list(messages)
        ids = []
        for msg in batch:
            msg_id = str(next(self._ids))
            # Set as Flower's SuperLink does (Metadata has no setter for it).
            msg.metadata.__dict__["_message_id"] = msg_id
            ids.append(msg_id)
        for msg_id, reply in zip(ids, self.deliver(batch), strict=True):
            self._replies[msg_id] = reply
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Hand back (and forget) the replies to these messages."""
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push and pull in one step (nothing here can time out)."""
        return self.pull_messages(self.push_messages(messages))

    def deliver(self, messages: list[Message]) -> list[Message]:
        """The replies to ``messages``, in their order."""
        raise NotImplementedError


#: The message types a cohort hook may answer together.
COHORT_KINDS = (MessageType.TRAIN, MessageType.EVALUATE)


class InProcessGrid(LocalGrid):
    """Delivers messages straight to a ClientApp in this process, one after another."""

    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        run_config: dict,
        run_id: int = 1,
        partitions: Iterable[int] | None = None,
        cohort: CohortHook | None = None,
    ) -> None:
        """``partitions``: the nodes this grid holds (all ``num_nodes`` by default; a worker of
        the sharded runtime holds its shard). ``cohort``: answers several train messages of a
        batch (or several evaluate messages) at once, or declines (None); each message goes
        to the ClientApp otherwise."""
        super().__init__(num_nodes, run_id)
        self._app = client_app
        self._cohort = cohort
        self._run_config, self._run_id = run_config, run_id
        held = range(num_nodes) if partitions is None else partitions
        self._held = {pid + NODE_ID_OFFSET for pid in held}
        # made when a node first gets a message: a node never sampled costs nothing here
        self._contexts: dict[int, Context] = {}

    def _context(self, node: int) -> Context:
        """The node's persistent context (``context.state`` lives across rounds)."""
        ctx = self._contexts.get(node)
        if ctx is None:
            if node not in self._held:
                raise KeyError(f"node {node} is not held by this grid")
            pid = node - NODE_ID_OFFSET
            ctx = Context(
                run_id=self._run_id,
                node_id=node,
                node_config={"partition-id": pid, "num-partitions": self._num_nodes},
                state=RecordDict(),
                run_config=self._run_config,
            )
            self._contexts[node] = ctx
        return ctx

    #: clients run in this process: no workers
    num_workers = 1

    def deliver(self, messages: list[Message]) -> list[Message]:
        """Each message executed now: the train messages together, and the evaluate messages
        together, where the cohort hook takes them, the others one after another; replies in
        the order of ``messages``."""
        replies: list[Message | None] = [None] * len(messages)
        done = 0
        for kind in COHORT_KINDS if self._cohort is not None else ():
            same = [i for i, m in enumerate(messages) if m.metadata.message_type == kind]
            if len(same) < 2:
                continue
            for i, reply in zip(same, self._together([messages[i] for i in same]), strict=True):
                replies[i] = reply
            now = sum(r is not None for r in replies)
            if now > done and self.on_progress:
                self.on_progress(now, len(messages))
            done = now
        for i, msg in enumerate(messages):
            if replies[i] is None:
                replies[i] = self.execute(msg)
                done += 1
                if self.on_progress:
                    self.on_progress(done, len(messages))
        return [r for r in replies if r is not None]

    def _together(self, messages: list[Message]) -> list[Message | None]:
        """The cohort hook's replies (None each where it declines; error replies if it raises)."""
        assert self._cohort is not None
        try:
            contexts = [self._context(m.metadata.dst_node_id) for m in messages]
            got = self._cohort(messages, contexts)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            return [
                Message(Error(code=CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=m) for m in messages
            ]
        return [None] * len(messages) if got is None else list(got)

    def execute(self, msg: Message) -> Message:
        """The ClientApp's reply to ``msg`` (an error reply when it raises, as on a SuperNode)."""
        try:
            return self._app(msg, self._context(msg.metadata.dst_node_id))
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            return Message(Error(code=CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)

    # -- client state (checkpoints) -------------------------------------------------

    def client_states(self) -> dict[int, RecordDict]:
        """Every node's ``context.state``, by partition id (non-empty ones only)."""
        return {node - NODE_ID_OFFSET: ctx.state for node, ctx in self._contexts.items() if len(ctx.state)}

    def restore_client_states(self, states: dict[int, RecordDict]) -> None:
        """Put saved ``context.state`` back on each node."""
        for pid, state in states.items():
            self._context(pid + NODE_ID_OFFSET).state = state
