#!/usr/bin/env bash
# kubesim's conformance tests drive the real kubectl; install Debian's
# kubernetes-client only where kubectl is missing. Safe to run repeatedly.
set -euo pipefail

if command -v kubectl >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq kubernetes-client
command -v kubectl >/dev/null
