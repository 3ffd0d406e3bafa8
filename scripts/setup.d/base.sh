#!/usr/bin/env bash
# What every test of the project needs: the Rust toolchain's fmt and clippy.
set -euo pipefail
command -v cargo >/dev/null || { echo "error: cargo is missing; this machine kind ships rustup's toolchain" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
