#!/usr/bin/env bash
# tests/e2e/images.rs pins image tags to digests against a real OCI registry
# it starts itself (support::registry): install Debian's docker-registry (the
# CNCF distribution registry) only where the binary is missing. The package's
# own service is not used; each test runs its own on a free loopback port.
# Safe to run repeatedly.
set -euo pipefail

if command -v docker-registry >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends docker-registry >/dev/null
command -v docker-registry >/dev/null || { echo "error: docker-registry is not on PATH after installing Debian's docker-registry" >&2; exit 1; }
