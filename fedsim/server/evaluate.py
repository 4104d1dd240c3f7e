"""Server-side evaluation of the global model on the global test set."""

from __future__ import annotations

from flwr.app import ArrayRecord

from fedsim.records import load_arrays
from fedsim.scenario import Scenario
from fedsim.training import evaluate
from fedsim.workspace import federated_data, worker_model


def central_evaluate(scenario: Scenario, arrays: ArrayRecord) -> dict[str, float]:
    """Loss and accuracy of ``arrays`` on the scenario's global test set."""
    model = worker_model(scenario, "server")
    load_arrays(model, arrays)
    ds = federated_data(scenario).dataset
    stats = evaluate(model, ds.x_test, ds.y_test)
    return {"server_loss": stats.loss, "server_accuracy": stats.accuracy}
