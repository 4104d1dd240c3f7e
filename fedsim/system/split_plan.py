"""``system.split_plan``: the split a deployed model would use on each client's device and link.

Federated learning and split computing share one device and link model: for every trained
client row, the planner of ``fedsim edge plan`` (:mod:`fedsim.edge.plan`) predicts local
computing, offloading and every split of an unmodified ResNet on the client's device
profile, the scenario's server profile and the client's network profile, and the row records
the candidate it chooses with its predicted latency and device energy. Only model compute
and transfers count: the other stages (preprocessing, encoding, decoding) would be measured
on this host, and rows must not depend on the host. So the choice is a pure function of
(device, network, spec), computed once per pair.
"""

from __future__ import annotations

from typing import Any

from fedsim.config import SplitPlanSpec
from fedsim.memo import Memo, memo
from fedsim.system.profiles import DEVICES, DeviceProfile, NetworkProfile

_CHOICES: Memo[dict[str, Any]] = memo("system.split_plan", 64)


def split_choice(spec: SplitPlanSpec, device: DeviceProfile, link: NetworkProfile) -> dict[str, Any]:
    """Columns for a client row: ``split_plan`` (the chosen candidate) and its predicted
    ``split_plan_latency_ms`` and ``split_plan_energy_mJ``; empty for a device without a
    published speed (``this-host``)."""
    server = DEVICES.get(spec.server)
    if device.gflops is None or server.gflops is None:
        return {}

    def build() -> dict[str, Any]:
        from fedsim.edge.plan import FixedLink, Machines, choose, predict
        from fedsim.edge.plan_costs import resnet_plan_candidates

        machines = Machines(device, server, device.resnet18_ms, server.resnet18_ms)  # type: ignore[arg-type]  # both have a speed
        cands = resnet_plan_candidates(spec.model, spec.size, [spec.jpeg_quality])
        best = choose([predict(c, FixedLink.of(link), machines) for c in cands], spec.objective)
        return {
            "split_plan": best.candidate.name,
            "split_plan_latency_ms": best.latency_ms,
            "split_plan_energy_mJ": best.energy_mj,
        }

    return _CHOICES.get((spec.model_dump_json(), device.name, link), build)
