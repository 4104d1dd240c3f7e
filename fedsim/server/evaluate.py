"""Server-side evaluation of the global model on the global test set."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord
from torch.nn.functional import cross_entropy

from fedsim.config import Scenario
from fedsim.devices import placed, resolve
from fedsim.metrics import server_group_accuracy
from fedsim.records import load_arrays
from fedsim.training import outputs
from fedsim.workspace import federated_data, worker_model


@torch.no_grad()
def central_evaluate(scenario: Scenario, arrays: ArrayRecord) -> dict[str, float]:
    """Loss and accuracy of ``arrays`` on the global test set, and per class group."""
    model = worker_model(scenario, "server")
    load_arrays(model, arrays)
    ds = federated_data(scenario).dataset
    model.eval()
    with placed(resolve(scenario.train.device), model) as device:
        logits = outputs(model, ds.x_test, device)
    pred, n = logits.argmax(1), max(len(ds.y_test), 1)
    return {
        "server_loss": float(cross_entropy(logits, ds.y_test, reduction="sum")) / n,
        "server_accuracy": int((pred == ds.y_test).sum()) / n,
        **server_group_accuracy(pred, ds.y_test, scenario, "server"),
    }
