#!/usr/bin/env bash
# Regenerates crypto/tests/vectors/python_vectors.json with Python's independent
# implementations (signedjson, canonicaljson). Needs python3 and PyPI; the output file is
# committed, so neither the build nor CI runs this.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VENV:-/tmp/scaiwave-crypto-vectors-venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    "signedjson==1.1.4" "canonicaljson==2.0.0"
"$venv/bin/python" "$root/scripts/gen_crypto_vectors.py" \
    "$root/crypto/tests/vectors/python_vectors.json"
