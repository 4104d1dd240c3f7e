"""The in-process Grid: delivery, persistent contexts, error replies, no copies."""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsim.runtimes.inprocess import InProcessGrid


def make_app() -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        if msg.content["config"].get("fail"):
            raise RuntimeError("boom")
        count = int(context.state.config_records.get("s", ConfigRecord({"n": 0}))["n"]) + 1
        context.state["s"] = ConfigRecord({"n": count})
        pid = int(context.node_config["partition-id"])
        same = msg.content is SHARED[0]
        return Message(
            RecordDict({"m": MetricRecord({"pid": pid, "n": count, "same": int(same)})}), reply_to=msg
        )

    return app


SHARED: list[RecordDict] = []


def test_delivery_state_and_errors() -> None:
    grid = InProcessGrid(make_app(), 3, {"x": 1})
    ids = list(grid.get_node_ids())
    assert len(ids) == 3
    SHARED[:] = [RecordDict({"config": ConfigRecord({})})]
    for expected in (1, 2):
        msgs = [Message(SHARED[0], dst_node_id=n, message_type=MessageType.TRAIN) for n in ids]
        replies = list(grid.send_and_receive(msgs))
        assert [r.metadata.src_node_id for r in replies] == ids
        assert [int(r.content["m"]["pid"]) for r in replies] == [0, 1, 2]
        assert all(int(r.content["m"]["n"]) == expected for r in replies)  # context.state persists
        assert all(int(r.content["m"]["same"]) == 1 for r in replies)  # no copy of the content
    assert set(grid.client_states()) == {0, 1, 2}
    bad = Message(
        RecordDict({"config": ConfigRecord({"fail": True})}), dst_node_id=ids[0], message_type="train"
    )
    (reply,) = grid.send_and_receive([bad])
    assert reply.has_error() and "RuntimeError: boom" in reply.error.reason


def test_the_grid_tells_progress_as_a_batch_is_answered() -> None:
    import io

    from rich.console import Console

    from fedsim.progress import RoundProgress

    grid = InProcessGrid(make_app(), 3, {})
    SHARED[:] = [RecordDict({"config": ConfigRecord({})})]
    seen: list[tuple[int, int]] = []
    grid.on_progress = lambda done, total: seen.append((done, total))
    msgs = [Message(SHARED[0], dst_node_id=n, message_type=MessageType.TRAIN) for n in grid.get_node_ids()]
    grid.send_and_receive(msgs)
    assert seen == [(1, 3), (2, 3), (3, 3)]

    bar = RoundProgress("run", 5, enabled=True, console=Console(file=io.StringIO(), force_terminal=True))
    bar.update({"round": 1, "server_accuracy": 0.5})
    bar.clients_done(1, 3)  # a round younger than CLIENTS_AFTER_S: nothing shown
    assert bar._progress is not None and bar._progress.tasks[0].fields["info"] == "acc 0.500"
    bar.CLIENTS_AFTER_S = 0.0
    bar.clients_done(2, 3)
    assert bar._progress.tasks[0].fields["info"] == "acc 0.500  clients 2/3"


def test_a_cohort_hook_answers_messages_of_one_type_together_declines_or_fails_them_all() -> None:
    seen: list[list[int]] = []
    mode = ["answer"]

    def hook(messages: list[Message], contexts: list[Context]) -> list[Message] | None:
        seen.append([int(c.node_config["partition-id"]) for c in contexts])
        if mode[0] == "decline":
            return None
        if mode[0] == "raise":
            raise ValueError("cohort broke")
        return [Message(RecordDict({"m": MetricRecord({"cohort": 1})}), reply_to=m) for m in messages]

    grid = InProcessGrid(make_app(), 3, {}, cohort=hook)
    ids = list(grid.get_node_ids())
    SHARED[:] = [RecordDict({"config": ConfigRecord({})})]

    def batch() -> list[Message]:
        train = [Message(SHARED[0], dst_node_id=n, message_type=MessageType.TRAIN) for n in ids[:2]]
        other = Message(SHARED[0], dst_node_id=ids[2], message_type=MessageType.EVALUATE)
        return list(grid.send_and_receive([train[0], other, train[1]]))

    replies = batch()  # the two train messages together; the evaluate message alone (no handler)
    assert seen == [[0, 1]]
    assert [int(r.content["m"]["cohort"]) for r in (replies[0], replies[2])] == [1, 1]
    assert replies[1].has_error()  # this app has no evaluate function
    evaluate = [Message(SHARED[0], dst_node_id=n, message_type=MessageType.EVALUATE) for n in ids]
    replies = list(grid.send_and_receive(evaluate))  # several evaluate messages: together too
    assert seen[-1] == [0, 1, 2] and [int(r.content["m"]["cohort"]) for r in replies] == [1, 1, 1]
    mode[0] = "decline"
    replies = batch()  # declined: each train message goes to the ClientApp
    assert [int(replies[i].content["m"]["n"]) for i in (0, 2)] == [1, 1]
    mode[0] = "raise"
    replies = batch()
    assert replies[0].has_error() and "ValueError: cohort broke" in replies[0].error.reason
    assert replies[2].has_error() and "ValueError: cohort broke" in replies[2].error.reason
