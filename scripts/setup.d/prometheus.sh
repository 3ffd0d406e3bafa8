#!/usr/bin/env bash
# tests/e2e/monitor.rs checks the monitor phase's scrape-target check against a
# real Prometheus it starts itself: install Debian's prometheus package only
# where the binary is missing. The package's own service is not needed (the
# test runs its own server on a free loopback port). Safe to run repeatedly.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Only the binary is used; the tests never talk to a packaged daemon.
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v prometheus >/dev/null || { echo "error: prometheus is not on PATH after installing Debian's prometheus" >&2; exit 1; }
