"""FedAvg (McMahan et al., AISTATS 2017, https://arxiv.org/abs/1602.05629).

w_{t+1} = sum_k (n_k / n) w_{t+1}^k over the sampled clients k, where n_k is the
number of training examples of client k. Aggregation is Flower's
``FedAvg.aggregate_train``; fedsim adds seeded sampling by partition id.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

from fedsim.config import Scenario
from fedsim.strategies.base import FedsimStrategyMixin, aggregate_evaluation, aggregate_metrics


class FedAvg(FedsimStrategyMixin, FlowerFedAvg):
    """Flower's FedAvg with fedsim's sampling."""

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(
            fraction_train=scenario.clients.fraction,
            fraction_evaluate=scenario.evaluation.client_fraction,
            min_train_nodes=scenario.clients.min,
            min_evaluate_nodes=1,
            min_available_nodes=scenario.clients.num,
            train_metrics_aggr_fn=aggregate_metrics,
            evaluate_metrics_aggr_fn=aggregate_evaluation,
        )
