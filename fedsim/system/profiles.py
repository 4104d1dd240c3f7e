"""Device and network profiles: one definition, shared by the simulator and the edge testbed.

A :class:`DeviceProfile` gives a device's effective training throughput (GFLOP/s), its
power in the idle, compute and radio-active (transmit/receive) states, and its memory.
A :class:`NetworkProfile` gives a link's uplink and downlink bandwidth, round-trip time,
jitter and packet loss. Both live in registries (:data:`DEVICES`, :data:`NETWORKS`);
scenarios name them (``system.mix``) and ``edge/`` imports them.

Throughput is *effective*: published ResNet-18 latencies at batch 1 (1.82 GFLOPs per
forward pass) turned into FLOP/s, so a workload's counted FLOPs over it give a time of
the same order as the device's own PyTorch would take. Sources are in each profile's
``source``; values marked *assumption* are not measurements and should be calibrated
on the device (the edge testbed's power meters and shaper) before drawing conclusions.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedsim.registry import Registry

#: Forward-pass FLOPs of ResNet-18 at 224x224 (2 x 1.82 G multiply-accumulates ~ 1.82 GFLOPs
#: as usually quoted), used to turn published latencies into effective throughput.
RESNET18_GFLOPS = 1.82


@dataclass(frozen=True)
class DeviceProfile:
    """A device class.

    Attributes
    ----------
    name : str
        Registry name.
    gflops : float | None
        Effective training throughput in GFLOP/s; ``None``: this host (calibrated at
        run time by timing the scenario's model, hence not deterministic).
    idle_w, compute_w, transmit_w : float
        Power in watts when idle (waiting for the round to end), training, and with
        the radio active (sending or receiving the model).
    memory_gb : float
        Memory available to training.
    source : str
        Where the numbers come from.
    """

    name: str
    gflops: float | None
    idle_w: float
    compute_w: float
    transmit_w: float
    memory_gb: float
    source: str

    @property
    def resnet18_ms(self) -> float | None:
        """ResNet-18's batch-1 latency at 224x224 here, in ms; None for this host (``gflops`` None)."""
        return None if self.gflops is None else RESNET18_GFLOPS / self.gflops * 1000.0


@dataclass(frozen=True)
class NetworkProfile:
    """A network link.

    Attributes
    ----------
    name : str
        Registry name.
    uplink_mbps, downlink_mbps : float
        Bandwidth in Mbit/s (client -> server, server -> client).
    rtt_ms : float
        Round-trip time in milliseconds (a transfer pays half of it).
    jitter_ms : float
        One-way delay varies uniformly within +- ``jitter_ms`` (seeded).
    loss : float
        Packet loss rate; a transfer takes ``1 / (1 - loss)`` times longer (retransmissions).
    source : str
        Where the numbers come from.
    """

    name: str
    uplink_mbps: float
    downlink_mbps: float
    rtt_ms: float
    jitter_ms: float
    loss: float
    source: str


DEVICES: Registry[DeviceProfile] = Registry("device profile")
NETWORKS: Registry[NetworkProfile] = Registry("network profile")


def register_device(profile: DeviceProfile) -> DeviceProfile:
    """Add a device profile to :data:`DEVICES` (its ``source`` is the summary)."""
    return DEVICES.register(profile.name, summary=profile.source)(profile)


def register_network(profile: NetworkProfile) -> NetworkProfile:
    """Add a network profile to :data:`NETWORKS` (its ``source`` is the summary)."""
    return NETWORKS.register(profile.name, summary=profile.source)(profile)


# ------------------------------------------------------------------------------ devices

register_device(
    DeviceProfile(
        name="jetson-nano",
        gflops=RESNET18_GFLOPS / 0.0347,  # 52 GFLOP/s
        idle_w=2.0,
        compute_w=10.0,
        transmit_w=3.0,
        memory_gb=4.0,
        source="ResNet-18 34.7 ms, PyTorch fp16, MaxN 10 W (NVIDIA torch2trt Jetson Nano table); "
        "idle about 2 W; transmit W is an assumption",
    )
)
register_device(
    DeviceProfile(
        name="jetson-orin",
        gflops=5 * RESNET18_GFLOPS / 0.0347,  # 262 GFLOP/s
        idle_w=4.0,
        compute_w=15.0,
        transmit_w=5.0,
        memory_gb=8.0,
        source="assumption: Jetson Orin Nano 8 GB at about 5x the Nano's PyTorch throughput, "
        "15 W mode; uncalibrated",
    )
)
register_device(
    DeviceProfile(
        name="rpi4",
        gflops=RESNET18_GFLOPS / 0.100,  # 18 GFLOP/s
        idle_w=2.7,
        compute_w=6.4,
        transmit_w=3.5,
        memory_gb=4.0,
        source="ResNet-18 100 ms, PyTorch 4 threads (PyTorch's Raspberry Pi 4 tutorial); idle "
        "2.2-2.7 W, load 5.1-6.4 W (public USB-meter measurements); transmit W is an assumption",
    )
)
register_device(
    DeviceProfile(
        name="gpu-server",
        gflops=5000.0,
        idle_w=60.0,
        compute_w=250.0,
        transmit_w=60.0,
        memory_gb=24.0,
        source="assumption: one data-centre GPU at 5 TFLOP/s effective, 250 W board power",
    )
)
register_device(
    DeviceProfile(
        name="this-host",
        gflops=None,
        idle_w=10.0,
        compute_w=30.0,
        transmit_w=12.0,
        memory_gb=8.0,
        source="the machine running fedsim, throughput calibrated at run time "
        "(non-deterministic); power is an assumption",
    )
)

# ----------------------------------------------------------------------------- networks

_NEUROSURGEON = "uplink from Neurosurgeon's measurements (Kang et al., ASPLOS 2017)"

register_network(
    NetworkProfile(
        "wifi", 18.9, 54.0, 10.0, 2.0, 0.001, f"{_NEUROSURGEON}; downlink, RTT, jitter, loss assumed"
    )
)
register_network(
    NetworkProfile(
        "lte", 5.85, 20.0, 50.0, 10.0, 0.005, f"{_NEUROSURGEON}; downlink, RTT, jitter, loss assumed"
    )
)
register_network(
    NetworkProfile("3g", 1.1, 2.0, 150.0, 30.0, 0.01, f"{_NEUROSURGEON}; downlink, RTT, jitter, loss assumed")
)
