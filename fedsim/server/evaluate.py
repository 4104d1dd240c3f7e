"""Server-side evaluation of the global model on the global test set."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord

from fedsim.config import Scenario
from fedsim.metrics import server_group_accuracy
from fedsim.records import load_arrays
from fedsim.training import evaluate
from fedsim.workspace import federated_data, worker_model


@torch.no_grad()
def central_evaluate(scenario: Scenario, arrays: ArrayRecord) -> dict[str, float]:
    """Loss and accuracy of ``arrays`` on the global test set, and per class group."""
    model = worker_model(scenario, "server")
    load_arrays(model, arrays)
    ds = federated_data(scenario).dataset
    stats = evaluate(model, ds.x_test, ds.y_test)
    pred = torch.cat([model(ds.x_test[i : i + 1024]).argmax(1) for i in range(0, len(ds.y_test), 1024)])
    return {
        "server_loss": stats.loss,
        "server_accuracy": stats.accuracy,
        **server_group_accuracy(pred, ds.y_test, scenario, "server"),
    }
