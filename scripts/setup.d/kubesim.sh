#!/usr/bin/env bash
# kubesim's conformance tests drive the real kubectl, and the differential
# suite (tests/controlplane/tests/differential.rs) the official Python client
# as well: install Debian's kubernetes-client where kubectl is missing and
# python3-kubernetes where Debian's own Python cannot import `kubernetes`.
# Always /usr/bin/python3: the machine's `python3` may be a pyenv one, which
# does not see Debian's packages. Safe to run repeatedly.
set -euo pipefail

missing=()
if ! command -v kubectl >/dev/null 2>&1; then
    missing+=(kubernetes-client)
fi
if ! /usr/bin/python3 -c 'import kubernetes' >/dev/null 2>&1; then
    missing+=(python3-kubernetes)
fi
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
command -v kubectl >/dev/null || { echo "error: kubectl is not on PATH after installing Debian's kubernetes-client" >&2; exit 1; }
/usr/bin/python3 -c 'import kubernetes' || { echo "error: /usr/bin/python3 cannot import kubernetes after installing Debian's python3-kubernetes" >&2; exit 1; }
