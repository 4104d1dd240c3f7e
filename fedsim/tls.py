"""Self-signed TLS material for loopback tests and small deployments (``cryptography``).

:func:`generate_certificates` writes a certificate authority (``ca.crt``, ``ca.key``) and a
server certificate signed by it (``server.crt``, ``server.key``, ``server.pem`` = chain
the way Flower's SuperLink expects) for the given host names and IP addresses. Clients
trust ``ca.crt``; servers present ``server.crt`` with ``server.key``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

FILES = ("ca.crt", "ca.key", "server.crt", "server.key", "server.pem")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def generate_certificates(out: Path, hosts: list[str] | None = None, days: int = 365) -> dict[str, Path]:
    """Write a CA and a server certificate for ``hosts`` into ``out``; return the file paths.

    Parameters
    ----------
    out : Path
        Folder to write ``ca.crt``, ``ca.key``, ``server.crt``, ``server.key`` and
        ``server.pem`` into (created).
    hosts : list of str, optional
        DNS names and IP addresses the server certificate is valid for (default:
        ``localhost`` and ``127.0.0.1``).
    days : int
        Validity in days.
    """
    hosts = hosts or ["localhost", "127.0.0.1"]
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    until = now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("fedsim test CA"))
        .issuer_name(_name("fedsim test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(until)
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {name: out / name for name in FILES}
    paths["ca.crt"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(ca_key, paths["ca.key"])
    server_pem = cert.public_bytes(serialization.Encoding.PEM)
    paths["server.crt"].write_bytes(server_pem)
    paths["server.pem"].write_bytes(server_pem + paths["ca.crt"].read_bytes())
    _write_key(key, paths["server.key"])
    return paths


def main(argv: list[str] | None = None) -> None:
    """``python -m fedsim.tls OUT [HOSTS...]``: write the certificates and list them."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0].startswith("-"):
        print("usage: python -m fedsim.tls OUT [HOST_OR_IP ...]", file=sys.stderr)
        sys.exit(2)
    for path in generate_certificates(Path(args[0]), args[1:] or None).values():
        print(path)


if __name__ == "__main__":
    main()
