#!/usr/bin/env sh
# Certificates for a TLS deployment (docker-compose.tls.yml, docs/deploy.md):
#   scripts/gen-certs.sh OUT [HOST_OR_IP ...]      (default hosts: localhost 127.0.0.1)
# writes OUT/ca.crt, ca.key, server.crt, server.key, server.pem (server.crt + ca.crt)
# and OUT/token (a random bearer token for the edge tail server; kept if it exists).
# SuperNodes and `fedsim run` trust OUT/ca.crt; keep ca.key off the devices.
set -eu
if [ $# -lt 1 ]; then
    echo "usage: $0 OUT [HOST_OR_IP ...]" >&2
    exit 2
fi
# The Python with fedsim installed: $PYTHON, else the checkout's .venv, else python3.
VENV_PYTHON="$(dirname "$0")/../.venv/bin/python"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$VENV_PYTHON" ]; then PYTHON="$VENV_PYTHON"; else PYTHON=python3; fi
fi
"$PYTHON" -m fedsim.tls "$@"
if [ ! -s "$1/token" ]; then
    "$PYTHON" -c "import secrets, sys; open(sys.argv[1], 'w').write(secrets.token_hex(32) + chr(10))" "$1/token"
    chmod 600 "$1/token"
fi
echo "$1/token"
