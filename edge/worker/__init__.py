"""The device worker: runs inference requests in one of three modes and measures every stage.

Modes (BottleFit's comparison, after sc2bench):

- ``local``: the whole unmodified model on the device, no network;
- ``offload``: the device sends a JPEG of the input, the server runs the whole model;
- ``split``: the device runs the head, quantises the bottleneck and sends it, the server
  runs the tail;
- ``adaptive``: per request, whichever of these the planner predicts best for the link as
  measured (:mod:`~fedsim.edge.worker.adaptive`).

Per request, with monotonic clocks: ``preprocess`` (uint8 image -> normalised tensor),
``head`` (the head, or the whole model in local mode), ``encode`` (codec, or JPEG),
``serialise`` (protobuf), ``network`` (time from sending to receiving minus the server's
own time, shaped transfers included), the server's ``queue``, ``server_decode`` and
``tail`` (its compute), ``decode`` (parsing the reply), and ``total``; payload bytes (what
the codec or JPEG produced), wire bytes (the serialised request) and reply bytes; device
energy per stage from the power meter.

Emulation: device-side stages measured on this host are multiplied by the device
profile's time scale (:mod:`fedsim.edge.calibrate`); the server's compute by its own (it reports
``compute_emulated_ms``). The energy of a stage is the meter's mean power over the stage's
real window times the stage's (emulated) duration; the ``network`` stage's energy covers
the device from sending to receiving (radio power while the shaper transfers, idle power
while the server computes). ``total`` adds the emulated stages; ``host_total_ms`` is the
wall time actually spent.

Failures: a call that fails with UNAVAILABLE (server gone, restarting) or
RESOURCE_EXHAUSTED from a full queue is retried with exponential backoff up to
``retries`` times; every request ends in exactly one row, ``ok`` or not, with its number
of attempts. Other statuses (INVALID_ARGUMENT, DEADLINE_EXCEEDED, ...) fail the request at

Layout: :mod:`~fedsim.edge.worker.config` (:class:`WorkerConfig`, modes),
:mod:`~fedsim.edge.worker.connection` (the channel to the server, shaping and retries),
:mod:`~fedsim.edge.worker.served` (models and test images), :mod:`~fedsim.edge.worker.loop`
(:class:`Worker`: the request loop), :mod:`~fedsim.edge.worker.adaptive` (the adaptive
mode's choice) and :mod:`~fedsim.edge.worker.summary` (``summary.json``
and ``power_trace.json``).
"""

from fedsim.edge.bench_files import REQUESTS_FILE, TRACE_FILE
from fedsim.edge.worker.config import MODES, WorkerConfig
from fedsim.edge.worker.connection import RETRYABLE, Connection, send
from fedsim.edge.worker.loop import STATUS_NAMES, TRACED_REQUESTS, Clock, Worker
from fedsim.edge.worker.served import Served, camera_images, from_folder, from_server
from fedsim.edge.worker.summary import ENERGY_STAGES, STAGES, power_trace, summarise
from fedsim.runstore import SUMMARY_FILE

__all__ = [
    "ENERGY_STAGES",
    "MODES",
    "REQUESTS_FILE",
    "RETRYABLE",
    "STAGES",
    "STATUS_NAMES",
    "SUMMARY_FILE",
    "TRACED_REQUESTS",
    "TRACE_FILE",
    "Clock",
    "Connection",
    "Served",
    "Worker",
    "WorkerConfig",
    "camera_images",
    "from_folder",
    "from_server",
    "power_trace",
    "send",
    "summarise",
]
