#!/usr/bin/env bash
# tests/e2e/ci_workflow.rs lints the GitHub Actions workflow that docs/ci.md
# ships (docs/ci/deploy.yml) with actionlint, and actionlint checks the
# workflow's shell steps with shellcheck. actionlint is built from the Go
# module proxy at the version pinned below, into
#   ${MAILY_CACHE:-$HOME/.cache/maily-deploy}/actionlint/<version>/actionlint
#   ${MAILY_CACHE:-$HOME/.cache/maily-deploy}/actionlint/current -> <version>
# (the test looks there); Debian's shellcheck is installed where it is
# missing. A built binary of the pinned version is reused (a rerun takes well
# under a second); changing the version builds the new one beside it. Safe to
# run repeatedly.
set -euo pipefail

# --- pinned version -------------------------------------------------------------
ACTIONLINT_VERSION=v1.7.12   # github.com/rhysd/actionlint (go 1.25.0 directive)
# ---------------------------------------------------------------------------------

log() { printf '   actionlint: %s\n' "$*"; }
die() { printf 'error: actionlint: %s\n' "$*" >&2; exit 1; }

root="${MAILY_CACHE:-$HOME/.cache/maily-deploy}/actionlint"
dest="$root/$ACTIONLINT_VERSION"

if [ ! -x "$dest/actionlint" ]; then
    command -v go >/dev/null || die "go is missing: install Go 1.25 or newer to build actionlint $ACTIONLINT_VERSION"
    mkdir -p "$root"
    build=$(mktemp -d "$root/.build.XXXXXX")
    chmod 755 "$build"
    trap 'rm -rf "$build"' EXIT
    log "building $ACTIONLINT_VERSION from the Go module proxy"
    # Never let go fetch another toolchain: only the module proxy is reachable.
    if ! GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$build" \
        go install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"; then
        die "go install github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION failed"
    fi
    rm -rf "$dest"
    mv "$build" "$dest"
    trap - EXIT
fi
have=$("$dest/actionlint" -version | head -n 1)
[ "$have" = "$ACTIONLINT_VERSION" ] || die "$dest/actionlint says it is $have, not $ACTIONLINT_VERSION; remove $dest and run again"
ln -sfn "$ACTIONLINT_VERSION" "$root/current"

if ! command -v shellcheck >/dev/null 2>&1; then
    log "installing Debian's shellcheck"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
    command -v shellcheck >/dev/null || die "shellcheck is not on PATH after installing Debian's shellcheck"
fi
log "$ACTIONLINT_VERSION at $root/current/actionlint; $(shellcheck --version | sed -n 's/^version: /shellcheck /p')"
