"""FedAvg (McMahan et al., AISTATS 2017, https://arxiv.org/abs/1602.05629).

w_{t+1} = sum_k (n_k / n) w_{t+1}^k over the sampled clients k, where n_k is the
number of training examples of client k; fedsim adds seeded sampling by partition id. The
``aggregator`` parameter swaps the mean for a robust aggregator (:mod:`fedsim.methods.robust`).
"""

from __future__ import annotations

from flwr.app import ArrayRecord
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

from fedsim.config import Scenario
from fedsim.methods.robust import AggregationParams, aggregate
from fedsim.strategies.base import FedsimStrategyMixin, aggregate_evaluation, aggregate_metrics


class FedAvg(FedsimStrategyMixin, FlowerFedAvg):
    """Flower's FedAvg with fedsim's sampling, and the scenario's aggregator."""

    def __init__(self, scenario: Scenario, params: AggregationParams | None = None) -> None:
        self.aggregation = params or AggregationParams()
        super().__init__(
            fraction_train=scenario.clients.fraction,
            fraction_evaluate=scenario.evaluation.client_fraction,
            min_train_nodes=scenario.clients.min,
            min_evaluate_nodes=1,
            min_available_nodes=scenario.clients.num,
            train_metrics_aggr_fn=aggregate_metrics,
            evaluate_metrics_aggr_fn=aggregate_evaluation,
        )

    def combine(self, records: list[ArrayRecord], weights: list[float]) -> ArrayRecord:
        """The scenario's aggregator over the accepted replies."""
        return aggregate(records, weights, self.global_arrays, self.aggregation)

    #: Whether a client replies with the global model's arrays, trained (False where an
    #: algorithm built on FedAvg sends something else back: prompts, representations).
    replies_are_the_model = True

    def reply_template(self) -> ArrayRecord | None:
        """A reply's arrays are the global model's: same keys, shapes and dtypes."""
        return self.global_arrays if self.replies_are_the_model else None
