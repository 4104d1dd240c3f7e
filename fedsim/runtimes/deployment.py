"""The ``deployment`` runtime: Flower's Deployment Engine, through ``flwr run``.

Someone runs ``flower-superlink`` and one ``flower-supernode`` per device (see
docs/deploy.md); ``fedsim run SCENARIO --runtime deployment --superlink HOST:PORT``
checks that the SuperLink answers (``GET /health``, over TLS when
``runtime.deployment.root_certificates`` names its CA), writes a private ``FLWR_HOME``
inside the run folder, submits the generated app folder with ``flwr run``, follows
progress through the run folder's metrics.jsonl, and reports how the run ended.

The ServerApp runs on the SuperLink's machine and writes ``run-dir`` there: submit
from a machine that sees the same run folder (the SuperLink's machine itself, or a
container sharing the compose file's ``runs`` volume at the same path).

Logs: ``RUN/flower/run.log`` (the ServerApp's output, and the reasons of failed clients).
"""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from fedsim.apps import write_submission
from fedsim.errors import RunFailed, UserError
from fedsim.runtimes.ray_launch import FEDERATION, FlowerSimulation, finish
from fedsim.runtimes.registry import RUNTIMES, LaunchRequest

#: Seconds to wait for the SuperLink's health endpoint.
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class SuperLinkTarget:
    """Where the SuperLink's HTTP API listens, and the CA that signed its certificate (TLS)."""

    host: str
    port: int
    root_certificates: Path | None = None

    @classmethod
    def parse(cls, address: str | None, root_certificates: Path | None) -> SuperLinkTarget:
        """Validate ``HOST:PORT`` (and the CA file, if any)."""
        if not address:
            raise UserError(
                "runtime deployment needs the SuperLink's address; expected --superlink HOST:PORT "
                "(or runtime.deployment.superlink in the scenario)"
            )
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(f"--superlink {address!r}: expected HOST:PORT, e.g. 192.168.1.10:9093")
        if root_certificates is not None and not root_certificates.is_file():
            raise UserError(
                f"root certificates {root_certificates} not found; expected the CA certificate (ca.crt) "
                "written by scripts/gen-certs.sh"
            )
        return cls(host.strip("[]"), int(port), root_certificates)

    @property
    def address(self) -> str:
        """``HOST:PORT``."""
        return f"{self.host}:{self.port}"

    def check(self, timeout: float = CONNECT_TIMEOUT_S) -> None:
        """Fail with one line unless the SuperLink answers ``GET /health`` the way it was asked."""
        if self.root_certificates is None:
            conn: http.client.HTTPConnection = http.client.HTTPConnection(
                self.host, self.port, timeout=timeout
            )
        else:
            ctx = ssl.create_default_context(cafile=str(self.root_certificates))
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=ctx)
        try:
            conn.request("GET", "/health")
            status = conn.getresponse().status
        except ssl.SSLCertVerificationError as exc:
            raise UserError(
                f"the SuperLink at {self.address} presents a certificate that {self.root_certificates} "
                f"does not verify ({exc.verify_message}); expected the ca.crt its certificate was made with"
            ) from None
        except ssl.SSLError as exc:
            raise UserError(
                f"TLS with the SuperLink at {self.address} failed ({exc.reason}); "
                "expected a SuperLink started with --ssl-certfile/--ssl-keyfile"
            ) from None
        except (http.client.HTTPException, ConnectionResetError) as exc:
            hint = (
                "it may use TLS: give its CA with --set runtime.deployment.root_certificates=ca.crt"
                if self.root_certificates is None
                else "expected flower-superlink"
            )
            raise UserError(
                f"the SuperLink at {self.address} did not answer ({type(exc).__name__}); {hint}"
            ) from None
        except OSError as exc:
            raise UserError(
                f"cannot reach the SuperLink at {self.address} ({exc.strerror or exc}); "
                "expected flower-superlink running there (fix --superlink or start it)"
            ) from None
        finally:
            conn.close()
        if status != 200:
            raise UserError(f"the SuperLink at {self.address} answered /health with HTTP {status}")

    def flwr_config(self) -> dict[str, Any]:
        """The ``[superlink.fedsim]`` table of ``FLWR_HOME/config.toml``."""
        table: dict[str, str | bool] = {"address": self.address}
        if self.root_certificates is None:
            table["insecure"] = True
        else:
            table["root-certificates"] = str(self.root_certificates)
        return {"superlink": {"default": FEDERATION, FEDERATION: table}}


class FlowerDeployment(FlowerSimulation):
    """The ``flwr`` calls of :class:`FlowerSimulation`, aimed at a SuperLink run by someone else.

    Nothing is started or stopped here: :meth:`start` only checks the SuperLink.
    """

    def __init__(self, work: Path, target: SuperLinkTarget) -> None:
        super().__init__(work, ray_address=None)
        self.target = target
        (self.home / "config.toml").write_text(tomli_w.dumps(target.flwr_config()))

    def start(self, timeout: float = CONNECT_TIMEOUT_S) -> None:
        """Check that the SuperLink answers."""
        self.target.check(timeout)


@RUNTIMES.register(
    "deployment", summary="Flower's Deployment Engine: a running SuperLink and real SuperNodes"
)
def launch(request: LaunchRequest) -> None:
    """Submit the scenario to a running SuperLink; results land in the run folder."""
    dep = request.scenario.runtime.deployment
    work = request.folder.path / "flower"
    target = SuperLinkTarget.parse(dep.superlink, dep.root_certificates)
    link = FlowerDeployment(work, target)
    link.start()
    app_dir, overrides = write_submission(work, request.run_config())
    res = link.flwr("run", str(app_dir), FEDERATION, "--run-config", str(overrides))
    if not res.get("success"):
        raise RunFailed(f"the SuperLink at {target.address} refused the run: {res.get('error-message')}")
    finish(request, link, str(res["run-id"]), f"on the SuperLink at {target.address}")
