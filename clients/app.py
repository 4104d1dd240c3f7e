"""The one ClientApp of fedsim: dispatches each message to the scenario's algorithm.

The same app runs in the in-process runtime, in Flower's Simulation Engine and on
a real SuperNode. A ``query`` message tells the server which partition a node
holds and how large its data is (used for seeded sampling by partition id).
"""

from __future__ import annotations

from flwr.app import Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsim.algorithms import client_of, cohort_plan
from fedsim.clients.common import ClientAlgorithm, client_env
from fedsim.data.export import node_partition
from fedsim.faults import misbehave
from fedsim.workspace import scenario_of

app = ClientApp()


def _algorithm(context: Context) -> ClientAlgorithm:
    return client_of(scenario_of(str(context.run_config["scenario"])).algorithm.name)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Run the algorithm's local training (committing the faults the scenario injects)."""
    scenario = scenario_of(str(context.run_config["scenario"]))
    handler = client_of(scenario.algorithm.name).train
    if not scenario.faults.injected():
        return handler(msg, context)
    env = client_env(msg, context)
    return misbehave(scenario, env.server_round, env.partition_id, msg, lambda: handler(msg, context))


def answer_cohort(messages: list[Message], contexts: list[Context]) -> list[Message] | None:
    """Several train (or several evaluate) messages of one round answered at once (fedsim's own
    grids call this), or None where the scenario answers each client on its own (see
    ``train.vectorise``)."""
    scenario = scenario_of(str(contexts[0].run_config["scenario"]))
    if scenario.train.vectorise == "off":  # the default: decided without serialising the scenario
        return None
    handlers = client_of(scenario.algorithm.name)
    kind = messages[0].metadata.message_type
    handler = {MessageType.TRAIN: handlers.train_cohort, MessageType.EVALUATE: handlers.evaluate_cohort}.get(
        kind
    )
    if handler is None or not cohort_plan(scenario)[0]:
        return None
    return handler(messages, contexts)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Run the algorithm's local evaluation."""
    return _algorithm(context).evaluate(msg, context)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Describe this node: partition id and data sizes."""
    scenario = scenario_of(str(context.run_config["scenario"]))
    pid, data = node_partition(context.node_config, scenario)
    info = MetricRecord({"partition-id": pid, "num-train": len(data.y_train), "num-test": len(data.y_test)})
    return Message(RecordDict({"info": info}), reply_to=msg)
