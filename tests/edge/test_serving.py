"""The gRPC split-inference testbed: a real tail server on loopback and the device worker."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedsim.edge.codec import CODECS, Encoded
from fedsim.edge.onnx_export import ort_session
from fedsim.edge.proto import SERVICE, pb, rpc
from fedsim.edge.server import ServedModel, ServerConfig, TailServer
from fedsim.edge.wire import jpeg_decode, jpeg_encode, preprocess, tensor_message
from fedsim.edge.worker import (
    REQUESTS_FILE,
    STAGES,
    SUMMARY_FILE,
    TRACE_FILE,
    Worker,
    WorkerConfig,
    camera_images,
)
from fedsim.errors import UserError
from fedsim.system.profiles import DEVICES
from fedsim.tls import generate_certificates


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_onnx: Path) -> ServedModel:
    return ServedModel(tiny_onnx)


@pytest.fixture(scope="module")
def server(tiny_onnx: Path):
    srv = TailServer(tiny_onnx, ServerConfig(port=0, workers=2))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def images(served: ServedModel) -> tuple[np.ndarray, np.ndarray]:
    return camera_images(served.manifest)


def stub(port: int) -> rpc.EdgeInferenceStub:
    return rpc.EdgeInferenceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))


def features_request(
    served: ServedModel, raw: np.ndarray, c: int = 1, request_id: int = 1
) -> pb.InferRequest:
    head = ServedModel  # noqa: F841 - documentation: the head runs on the device
    session = ort_session(served.folder / f"C{c}" / "head.onnx", 1)
    z = session.run(None, {"image": preprocess(raw, served.mean, served.std)})[0]
    encoded = CODECS.get("quant8").encode(torch.from_numpy(z[0]))
    return pb.InferRequest(request_id=request_id, features=tensor_message(encoded))


def dequantised(request: pb.InferRequest) -> np.ndarray:
    """The bottleneck the server sees, decoded the way the codec defines it."""
    t = request.features
    return (
        CODECS.get("quant8")
        .decode(Encoded(t.data, tuple(t.shape), "uint8", "quant8", t.scale, t.zero_point))
        .numpy()
    )


def rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / REQUESTS_FILE).read_text().splitlines()]


# ------------------------------------------------------------------ correct answers


def test_split_reply_equals_local_tail(server: TailServer, served: ServedModel, images) -> None:
    raw = images[0][3]
    request = features_request(served, raw)
    reply = stub(server.port).Infer(request, timeout=10)
    local = served.run_tail(dequantised(request))[0]
    np.testing.assert_allclose(np.asarray(reply.logits), local, atol=1e-5)
    assert reply.prediction == int(np.argmax(local)) and reply.request_id == 1
    t = reply.timings
    assert t.total_ms >= t.queue_ms + t.decode_ms + t.compute_ms > 0
    assert t.compute_emulated_ms == pytest.approx(t.compute_ms)  # this-host: no scaling


@pytest.mark.parametrize("mode", ["local", "offload", "split"])
def test_worker_predictions_equal_the_whole_model_run_locally(
    mode: str, server: TailServer, served: ServedModel, images, tmp_path: Path
) -> None:
    worker = Worker(WorkerConfig(mode=mode, server=f"127.0.0.1:{server.port}", requests=12, warmup=2))
    try:
        summary = worker.run(tmp_path / "out")
    finally:
        worker.close()
    got = rows(tmp_path / "out")
    assert [r["request_id"] for r in got] == list(range(12)) and all(r["ok"] for r in got)
    raw, labels = images
    for r in got:
        x = raw[r["image"]]
        if mode == "local":
            expected = served.run_full(preprocess(x, served.mean, served.std))
        elif mode == "offload":
            decoded = jpeg_decode(jpeg_encode(x, 90), served.input_shape)
            expected = served.run_full(preprocess(decoded, served.mean, served.std))
            assert r["payload_bytes"] == len(jpeg_encode(x, 90))
        else:
            req = features_request(served, x)
            expected = served.run_tail(dequantised(req))
            assert r["payload_bytes"] == len(req.features.data) + 5  # uint8 values + scale + zero point
        assert r["prediction"] == int(np.argmax(expected[0])) and r["label"] == int(labels[r["image"]])
    assert summary["ok"] == 12 and summary["failed"] == 0
    assert summary["accuracy"] == pytest.approx(np.mean([r["correct"] for r in got]))
    for stage in STAGES:
        q = summary["latency_ms"][stage]
        assert q["p50"] <= q["p90"] <= q["p99"]
    if mode == "local":
        assert all(r["network_ms"] == 0 and r["wire_bytes"] == 0 for r in got)
    else:
        assert all(r["network_ms"] > 0 and r["wire_bytes"] > r["payload_bytes"] > 0 for r in got)
    trace = json.loads((tmp_path / "out" / TRACE_FILE).read_text())
    assert {s["request_id"] for s in trace["stages"]} == set(range(5))
    with pytest.raises(UserError, match="already holds results"):
        Worker(WorkerConfig(mode=mode, server=f"127.0.0.1:{server.port}", requests=1)).run(tmp_path / "out")


def test_stream_gives_the_same_predictions_as_unary(server: TailServer, tmp_path: Path) -> None:
    out = {}
    for stream in (False, True):
        w = Worker(
            WorkerConfig(mode="split", server=f"127.0.0.1:{server.port}", requests=8, warmup=1, stream=stream)
        )
        try:
            w.run(tmp_path / str(stream))
        finally:
            w.close()
        out[stream] = [r["prediction"] for r in rows(tmp_path / str(stream))]
    assert out[True] == out[False]


def test_info_and_models_served(server: TailServer, served: ServedModel) -> None:
    info = stub(server.port).Info(pb.InfoRequest(), timeout=10)
    assert [s.channels for s in info.splits] == [1, 3]
    assert list(info.splits[1].bottleneck_shape) == [3, 17, 17]
    assert info.codec == "quant8" and "quant8" in info.codecs and info.max_message_bytes == 4 << 20
    assert json.loads(info.data_json)["dataset"] == "shapes"
    chunks = list(stub(server.port).GetModel(pb.ModelRequest(part="head", channels=3), timeout=10))
    assert b"".join(c.data for c in chunks) == (served.folder / "C3" / "head.onnx").read_bytes()


def test_health_service(server: TailServer) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=SERVICE), timeout=5
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# ------------------------------------------------------------------------- bad input


def _bad(good: pb.InferRequest, **changes) -> pb.InferRequest:
    bad = pb.InferRequest()
    bad.CopyFrom(good)
    for key, value in changes.items():
        if key == "shape":
            del bad.features.shape[:]
            bad.features.shape.extend(value)
        else:
            setattr(bad.features, key, value)
    return bad


BAD_CASES = {
    "unknown codec": ({"codec": "zip"}, "unknown codec 'zip'"),
    "unknown dtype": ({"dtype": "int7"}, "unknown dtype 'int7'"),
    "dtype not the codec's": ({"dtype": "float32"}, "does not match codec 'quant8' (expected uint8)"),
    "bytes not matching shape": ({"data": b"\x00" * 10}, "10 bytes do not match shape [1, 1, 17, 17]"),
    "wrong shape for the model": ({"shape": [1, 5, 17, 17]}, "does not fit the served model"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_tensor_gets_invalid_argument_and_server_goes_on(
    case: str, server: TailServer, served: ServedModel, images, caplog: pytest.LogCaptureFixture
) -> None:
    changes, message = BAD_CASES[case]
    good = features_request(served, images[0][0])
    before = server.service.failures
    with caplog.at_level(logging.WARNING, logger="fedsim.edge.server"), pytest.raises(grpc.RpcError) as err:
        stub(server.port).Infer(_bad(good, **changes), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    assert server.service.failures == before + 1
    assert any("INVALID_ARGUMENT" in r.getMessage() and message in r.getMessage() for r in caplog.records)
    assert stub(server.port).Infer(good, timeout=10).prediction >= 0  # the next good request is served


def fuzzed_requests(good: pb.InferRequest, count: int, seed: int = 0) -> list[pb.InferRequest]:
    """``count`` mutations of a good request: random bytes, shapes, dtypes, codecs, images."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        bad = pb.InferRequest()
        bad.CopyFrom(good)
        bad.request_id = int(rng.integers(0, 2**31))
        kind = int(rng.integers(0, 6))
        if kind == 0:
            bad.features.data = rng.bytes(int(rng.integers(0, 2000)))
        elif kind == 1:
            del bad.features.shape[:]
            bad.features.shape.extend(int(v) for v in rng.integers(-3, 40, int(rng.integers(0, 6))))
        elif kind == 2:
            bad.features.dtype = str(rng.choice(["float16", "int64", "", "uint8", "\x00", "float32" * 50]))
        elif kind == 3:
            bad.features.codec = str(rng.choice(["", "raw", "quant8", "zip", "q" * 300]))
        elif kind == 4:
            bad = pb.InferRequest(image=pb.Image(data=rng.bytes(int(rng.integers(0, 4000))), format="jpeg"))
        else:  # several fields at once
            bad.features.data = bad.features.data[: int(rng.integers(0, len(bad.features.data) + 1))]
            bad.features.scale = float(rng.choice([np.nan, np.inf, -1.0, 0.0, 1e38]))
        out.append(bad)
    return out


def test_fuzzed_requests_get_a_status_and_the_server_stays_up(
    server: TailServer, served: ServedModel, images
) -> None:
    good = features_request(served, images[0][0])
    statuses: dict[str, int] = {}
    for request in fuzzed_requests(good, 150):
        try:
            stub(server.port).Infer(request, timeout=10)
            statuses["OK"] = statuses.get("OK", 0) + 1
        except grpc.RpcError as err:
            statuses[err.code().name] = statuses.get(err.code().name, 0) + 1
    print(f"150 fuzzed requests: {statuses}")
    assert sum(statuses.values()) == 150
    assert not {"UNKNOWN", "INTERNAL", "DEADLINE_EXCEEDED", "UNAVAILABLE"} & statuses.keys(), statuses
    assert statuses.get("INVALID_ARGUMENT", 0) > 50  # most mutations are refused, with a reason
    test_health_service(server)  # still SERVING
    assert stub(server.port).Infer(good, timeout=10).prediction >= 0


def test_bad_image_and_empty_request(server: TailServer) -> None:
    s = stub(server.port)
    for request, message in (
        (pb.InferRequest(image=pb.Image(data=b"not a jpeg", format="jpeg")), "not a decodable JPEG"),
        (pb.InferRequest(image=pb.Image(data=b"x", format="webp")), "unknown image format 'webp'"),
        (pb.InferRequest(request_id=4), "request has no input"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            s.Infer(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.details()
    small = jpeg_encode(np.zeros((8, 8, 3), np.uint8), 90)
    with pytest.raises(grpc.RpcError) as err:
        s.Infer(pb.InferRequest(image=pb.Image(data=small, format="jpeg")), timeout=10)
    assert "image is 8x8 pixels; expected 32x32" in err.value.details()


def test_stream_survives_a_bad_request(server: TailServer, served: ServedModel, images) -> None:
    good = features_request(served, images[0][0])
    requests = [good, _bad(good, codec="zip"), good]
    replies = list(stub(server.port).InferStream(iter(requests), timeout=10))
    assert [r.error_code for r in replies] == [0, grpc.StatusCode.INVALID_ARGUMENT.value[0], 0]
    assert "unknown codec" in replies[1].error_message
    assert replies[0].prediction == replies[2].prediction


def test_oversized_request_gets_resource_exhausted(tiny_onnx: Path, served: ServedModel, images) -> None:
    with TailServer(tiny_onnx, ServerConfig(port=0, max_message_bytes=2048)) as srv:
        s = stub(srv.port)
        big = pb.InferRequest(image=pb.Image(data=b"\xff" * 5000, format="jpeg"))
        with pytest.raises(grpc.RpcError) as err:
            s.Infer(big, timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "exceeds the server's limit of 2048 bytes" in err.value.details()
        assert s.Infer(features_request(served, images[0][0]), timeout=10).prediction >= 0


def test_deadline_passed_in_queue_is_not_computed(
    tiny_onnx: Path, served: ServedModel, images, caplog: pytest.LogCaptureFixture
) -> None:
    with TailServer(tiny_onnx, ServerConfig(port=0, workers=1)) as srv:
        good = features_request(served, images[0][0])
        srv.service.slots.acquire()  # the only compute worker is busy
        with caplog.at_level(logging.WARNING, logger="fedsim.edge.server"):
            with pytest.raises(grpc.RpcError) as err:
                stub(srv.port).Infer(good, timeout=0.3)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            time.sleep(0.2)
            srv.service.slots.release()
            deadline = time.monotonic() + 5
            while srv.service.failures == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
        assert srv.service.failures == 1
        assert any("deadline passed" in r.getMessage() for r in caplog.records)
        assert stub(srv.port).Infer(good, timeout=10).prediction >= 0


# --------------------------------------------------------------------- TLS and token


def test_tls_with_a_generated_certificate(tiny_onnx: Path, tmp_path: Path) -> None:
    certs = generate_certificates(tmp_path / "certs")
    config = ServerConfig(port=0, tls_cert=certs["server.crt"], tls_key=certs["server.key"])
    with TailServer(tiny_onnx, config) as srv:
        address = f"127.0.0.1:{srv.port}"
        w = Worker(WorkerConfig(mode="split", server=address, requests=3, warmup=1, tls_ca=certs["ca.crt"]))
        try:
            assert w.run(tmp_path / "tls")["ok"] == 3
        finally:
            w.close()
        with pytest.raises(UserError, match="is fedsim edge serve running there, with matching TLS"):
            Worker(WorkerConfig(mode="split", server=address, timeout_s=2))


def test_token_accepted_and_refused(tiny_onnx: Path, tmp_path: Path) -> None:
    with TailServer(tiny_onnx, ServerConfig(port=0, token="s3cret")) as srv:
        address = f"127.0.0.1:{srv.port}"
        with pytest.raises(UserError, match="UNAUTHENTICATED: missing bearer token"):
            Worker(WorkerConfig(mode="split", server=address))
        with pytest.raises(UserError, match="UNAUTHENTICATED: wrong bearer token"):
            Worker(WorkerConfig(mode="split", server=address, token="guess"))
        w = Worker(WorkerConfig(mode="offload", server=address, requests=2, warmup=0, token="s3cret"))
        try:
            assert w.run(tmp_path / "ok")["ok"] == 2
        finally:
            w.close()
        channel = grpc.insecure_channel(address)  # health checks need no token
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert srv.service.failures == 2


# ------------------------------------------------------------------- server restarts


def test_worker_survives_a_server_restart(tiny_onnx: Path, tmp_path: Path) -> None:
    port = free_port()
    config = ServerConfig(port=port, workers=1)
    first = TailServer(tiny_onnx, config)
    first.start()
    slow_link = {"uplink_mbps": 100, "downlink_mbps": 100, "rtt_ms": 30}
    worker = Worker(
        WorkerConfig(mode="split", server=f"127.0.0.1:{port}", requests=40, warmup=0, network=slow_link)
    )
    out = tmp_path / "restart"
    thread = threading.Thread(target=worker.run, args=(out,))
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while (not (out / REQUESTS_FILE).exists() or len(rows(out)) < 10) and time.monotonic() < deadline:
            time.sleep(0.01)
        first.stop(grace=0)
        time.sleep(0.5)
        second = TailServer(tiny_onnx, config)
        second.start()
        thread.join(60)
    finally:
        first.stop()
        second.stop()
        worker.close()
    got = rows(out)
    assert [r["request_id"] for r in got] == list(range(40))  # each exactly once, in order
    assert all(r["ok"] for r in got)
    assert max(r["attempts"] for r in got) > 1
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["ok"] == 40 and summary["failed"] == 0


def test_request_failing_after_retries_is_recorded_once(tiny_onnx: Path, tmp_path: Path) -> None:
    with TailServer(tiny_onnx, ServerConfig(port=0)) as srv:
        w = Worker(
            WorkerConfig(
                mode="offload", server=f"127.0.0.1:{srv.port}", requests=3, warmup=0, retries=2, timeout_s=1
            )
        )
    try:  # the server is gone before the first request
        summary = w.run(tmp_path / "gone")
    finally:
        w.close()
    got = rows(tmp_path / "gone")
    assert [r["request_id"] for r in got] == [0, 1, 2]
    assert all(not r["ok"] and r["attempts"] == 3 and r["error"].startswith("UNAVAILABLE") for r in got)
    assert summary["failed"] == 3 and summary["errors"]


# ------------------------------------------------------------------------ emulation


def test_emulated_device_scales_device_stages_and_energy_adds_up(server: TailServer, tmp_path: Path) -> None:
    from fedsim.edge.calibrate import calibrate, time_scale

    rpi4 = DEVICES.get("rpi4")
    w = Worker(
        WorkerConfig(mode="split", server=f"127.0.0.1:{server.port}", device="rpi4", requests=6, warmup=1)
    )
    try:
        summary = w.run(tmp_path / "rpi4")
    finally:
        w.close()
    assert summary["time_scale"] == pytest.approx(time_scale(rpi4, calibrate()))
    assert summary["calibration"]["host_ref_ms"] > 0
    for r in rows(tmp_path / "rpi4"):
        device = sum(r[f"{s}_ms"] for s in ("preprocess", "head", "encode", "serialise", "decode"))
        # the device stages were measured on this host, then scaled: they fit in the real time
        assert device / summary["time_scale"] <= r["host_total_ms"]
        assert r["total_ms"] == pytest.approx(device + r["network_ms"] + r["server_total_ms"], rel=1e-6)
        e = r["energy_J"]
        assert e["total"] == pytest.approx(sum(v for k, v in e.items() if k != "total"))
        seconds = r["total_ms"] / 1e3  # energy = power within the model's range x emulated duration
        assert rpi4.idle_w * seconds * 0.99 <= e["total"]
        assert e["total"] <= (rpi4.compute_w + rpi4.transmit_w - rpi4.idle_w) * seconds * 1.01


def test_unknown_split_and_missing_server_are_user_errors(server: TailServer) -> None:
    with pytest.raises(UserError, match="bottleneck C=7 is not served; expected one of 1, 3"):
        Worker(WorkerConfig(mode="split", server=f"127.0.0.1:{server.port}", channels=7))
    with pytest.raises(UserError, match="needs --server"):
        Worker(WorkerConfig(mode="offload"))
    with pytest.raises(UserError, match="no answer within 1 s; is fedsim edge serve running"):
        Worker(WorkerConfig(mode="split", server=f"127.0.0.1:{free_port()}", timeout_s=1))


def test_local_mode_from_a_model_folder_needs_no_server(tiny_onnx: Path, tmp_path: Path) -> None:
    w = Worker(WorkerConfig(mode="local", model_dir=tiny_onnx, requests=3, warmup=0))
    assert w.run(tmp_path / "local")["ok"] == 3


def test_stubs_generate_from_the_proto(tmp_path: Path) -> None:
    from fedsim.edge.proto import PROTO, _generate

    _generate(tmp_path / "gen")
    grpc_code = (tmp_path / "gen" / "inference_pb2_grpc.py").read_text()
    assert "EdgeInferenceStub" in grpc_code and "InferStream" in grpc_code
    assert "package fedsim.edge.v1" in PROTO.read_text()


def test_real_board_mode_does_not_scale(server: TailServer, tmp_path: Path) -> None:
    address = f"127.0.0.1:{server.port}"
    w = Worker(WorkerConfig(mode="split", server=address, device="rpi4", emulate=False, requests=2, warmup=0))
    try:
        summary = w.run(tmp_path / "board")
    finally:
        w.close()
    assert summary["time_scale"] == 1.0 and summary["calibration"] is None
    assert summary["meter"]["meter"] == "model" and "rpi4" in summary["meter"]["method"]
