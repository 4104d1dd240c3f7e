"""The ``faults:`` section of a scenario: injected client faults and what a round does when
too few replies are accepted.

Every injected fault is drawn per (run seed, round, client, kind), so a scenario injects the
same faults on every runtime, on resume and on rerun; clients.jsonl records each client's
fault in its ``fault`` column.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fedsim.config.base import Strict


class FaultRate(Strict):
    """How often a fault strikes: with probability ``rate`` per sampled client and training
    round, among the clients ``clients`` names (all by default)."""

    rate: float = Field(0.0, ge=0, le=1, description="probability per client and round")
    clients: list[int] | float | None = Field(
        None,
        description="the clients it may strike: partition ids, or a fraction of all clients drawn once "
        "from the seed (default: every client)",
    )

    @model_validator(mode="after")
    def _fraction(self) -> FaultRate:
        if isinstance(self.clients, float) and not 0 < self.clients <= 1:
            raise ValueError(f"clients as a fraction must be in (0, 1], got {self.clients}")
        return self


class HangFault(FaultRate):
    """The reply comes ``seconds`` late: judged by the round's deadline, in virtual time with a
    ``system:`` section, else against ``runtime.round_deadline_s`` (on Flower's engines the
    client really waits)."""

    seconds: float = Field(30.0, gt=0, description="how late the reply comes")


class CorruptFault(FaultRate):
    """The update sent back is corrupted: NaN or Inf in every float array, or the client's
    update (its weights minus the global ones) multiplied by ``scale``."""

    mode: Literal["nan", "inf", "scale"] = "nan"
    scale: float = Field(-10.0, description="factor of the update with mode: scale")


class FaultsSpec(Strict):
    """Injected faults of the training rounds, and the rule for rounds with too few replies."""

    crash: FaultRate = Field(default_factory=FaultRate, description="the ClientApp raises")
    hang: HangFault = Field(default_factory=HangFault, description="the reply comes late")
    corrupt: CorruptFault = Field(default_factory=CorruptFault, description="the update is corrupted")
    drop_reply: FaultRate = Field(default_factory=FaultRate, description="the reply never reaches the server")
    on_too_few: Literal["retry", "skip", "fail"] = Field(
        "skip",
        description="when fewer than clients.min replies are accepted: sample again (retry), keep the "
        "global model (skip) or end the run (fail)",
    )
    retries: int = Field(2, ge=1, le=20, description="new samples a round may draw with on_too_few: retry")

    def injected(self) -> dict[str, FaultRate]:
        """The fault kinds with a non-zero rate, by name."""
        kinds = {
            "crash": self.crash,
            "hang": self.hang,
            "corrupt": self.corrupt,
            "drop_reply": self.drop_reply,
        }
        return {name: spec for name, spec in kinds.items() if spec.rate > 0}
