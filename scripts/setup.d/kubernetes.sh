#!/usr/bin/env bash
# A real Kubernetes control plane for the tests that need more than kubesim:
# kube-apiserver, kube-controller-manager and kube-scheduler (k8s.io/kubernetes),
# etcd (go.etcd.io/etcd/server/v3) and kwok (fake nodes and pods), built from
# the Go module proxy at the versions pinned below, plus the CRDs the project
# applies (Gateway API standard channel; the Prometheus operator's
# ServiceMonitor and PrometheusRule), copied from their modules.
#
# Everything lands outside the checkout, one directory per version tuple:
#   ${MAILY_CACHE:-$HOME/.cache/maily-deploy}/kubernetes/<tuple>/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,etcd,kwok}
#   ${MAILY_CACHE:-$HOME/.cache/maily-deploy}/kubernetes/<tuple>/crds/{gateway-api,prometheus-operator}/*.yaml
#   ${MAILY_CACHE:-$HOME/.cache/maily-deploy}/kubernetes/<tuple>/kwok-stages/*.yaml (kwok's default stages:
#       the binary has none built in, and a --config must carry every stage it should play)
#   ${MAILY_CACHE:-$HOME/.cache/maily-deploy}/kubernetes/current -> <tuple>
# A directory with a .complete marker is reused as is (a rerun takes well under
# a second); changing a pinned version builds a new one (an interrupted build
# resumes at the part it stopped in). With MAILY_K8S_BIN set nothing is built:
# that directory must already hold the five binaries at the pinned versions
# (the CRDs and kwok stages are still copied into the tuple's directory).
# Safe to run repeatedly and concurrently (a lock serialises runs). A cold
# build takes about 8-12 min on 2 cores and about 4.5 GB of Go caches.
set -euo pipefail

# --- pinned versions --------------------------------------------------------
K8S_VERSION=v1.34.4                  # k8s.io/kubernetes (go 1.24.0 directive)
ETCD_VERSION=v3.6.5                  # go.etcd.io/etcd/server/v3, kubeadm's etcd for 1.34
KWOK_VERSION=v0.8.0                  # sigs.k8s.io/kwok (go 1.26.0 directive)
GATEWAY_API_VERSION=v1.4.1           # sigs.k8s.io/gateway-api, config/crd/standard
PROMETHEUS_OPERATOR_VERSION=v0.85.0  # github.com/prometheus-operator/prometheus-operator
# -----------------------------------------------------------------------------

KUBE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler)
ALL_BINARIES=("${KUBE_BINARIES[@]}" etcd kwok)
PROMETHEUS_OPERATOR_CRDS=(monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_prometheusrules.yaml)
# What kwokctl loads by default (pkg/kwokctl/runtime/cluster.go), from the kwok module's kustomize/stage/.
KWOK_DEFAULT_STAGES=(node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml)

log() { printf '==> kubernetes: %s\n' "$*"; }
die() { printf 'error: kubernetes: %s\n' "$*" >&2; exit 1; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# run_logged LOGFILE CMD...: CMD's output goes to LOGFILE; on failure its tail is shown.
run_logged() {
    local logfile=$1; shift
    printf '$ %s\n' "$*" >>"$logfile"
    if ! "$@" >>"$logfile" 2>&1; then
        echo "---- last lines of $logfile ----" >&2
        tail -n 40 "$logfile" >&2
        die "failed: $* (full log: $logfile)"
    fi
}

# step DESCRIPTION FUNCTION [ARGS...]: log the step and how long it took.
step() {
    local what=$1; shift
    local t0=$EPOCHREALTIME
    log "$what..."
    "$@"
    log "$what... done (took $(since "$t0") s)"
}

# mod_field MODULE@VERSION FIELD: a field of `go mod download -json` (downloads the module).
mod_field() {
    local json
    if ! json=$(go mod download -json "$1" 2>&1); then
        printf '%s\n' "$json" >&2
        die "go mod download -json $1 failed"
    fi
    sed -n "s/^[[:space:]]*\"$2\": \"\(.*\)\",\{0,1\}\$/\1/p" <<<"$json"
}

have_binaries() { # DIR: all five binaries there and executable
    local b
    for b in "${ALL_BINARIES[@]}"; do [ -x "$1/$b" ] || return 1; done
}

GO_MINIMUM=1.26 # kwok v0.8.0's go directive; k8s v1.34.4 asks for 1.24
command -v go >/dev/null || die "go is missing: install Go $GO_MINIMUM or newer (kwok $KWOK_VERSION needs it), or point MAILY_K8S_BIN at built binaries"
go_have=$(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')
if [ -z "${MAILY_K8S_BIN:-}" ] && [ "$(printf '%s\n%s\n' "$GO_MINIMUM" "$go_have" | sort -V | head -n 1)" != "$GO_MINIMUM" ]; then
    die "go $go_have is older than $GO_MINIMUM, which kwok $KWOK_VERSION needs: install Go $GO_MINIMUM or newer, or point MAILY_K8S_BIN at built binaries"
fi
# Never let go try to fetch another toolchain: only the module proxy is reachable.
export GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

CACHE_ROOT="${MAILY_CACHE:-$HOME/.cache/maily-deploy}/kubernetes"
TUPLE="${K8S_VERSION}-etcd${ETCD_VERSION}-kwok${KWOK_VERSION}-gw${GATEWAY_API_VERSION}-promop${PROMETHEUS_OPERATOR_VERSION}"
DEST="$CACHE_ROOT/$TUPLE"
BIN="$DEST/bin"
CRDS="$DEST/crds"
STAGES="$DEST/kwok-stages"
BUILD="$DEST/build"
LOGS="$DEST/logs"

# --- steps --------------------------------------------------------------------

copy_crds() {
    local dir f
    rm -rf "$CRDS.tmp"
    mkdir -p "$CRDS.tmp/gateway-api" "$CRDS.tmp/prometheus-operator"

    dir=$(mod_field "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" Dir)
    [ -d "$dir/config/crd/standard" ] || die "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION has no config/crd/standard"
    for f in "$dir"/config/crd/standard/gateway.networking.k8s.io_*.yaml; do
        install -m 0644 "$f" "$CRDS.tmp/gateway-api/"
    done

    dir=$(mod_field "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" Dir)
    for f in "${PROMETHEUS_OPERATOR_CRDS[@]}"; do
        [ -f "$dir/example/prometheus-operator-crd/$f" ] || die "prometheus-operator@$PROMETHEUS_OPERATOR_VERSION has no example/prometheus-operator-crd/$f"
        install -m 0644 "$dir/example/prometheus-operator-crd/$f" "$CRDS.tmp/prometheus-operator/"
    done

    rm -rf "$CRDS"
    mv "$CRDS.tmp" "$CRDS"
}

copy_kwok_stages() {
    local dir f
    dir=$(mod_field "sigs.k8s.io/kwok@$KWOK_VERSION" Dir)
    rm -rf "$STAGES.tmp"
    mkdir -p "$STAGES.tmp"
    for f in "${KWOK_DEFAULT_STAGES[@]}"; do
        [ -f "$dir/kustomize/stage/$f" ] || die "sigs.k8s.io/kwok@$KWOK_VERSION has no kustomize/stage/$f"
        install -m 0644 "$dir/kustomize/stage/$f" "$STAGES.tmp/"
    done
    # All of them as one multi-document file, for kwok --config.
    for f in "${KWOK_DEFAULT_STAGES[@]}"; do
        printf -- '---\n# sigs.k8s.io/kwok@%s kustomize/stage/%s\n' "$KWOK_VERSION" "$f"
        cat "$dir/kustomize/stage/$f"
    done >"$STAGES.tmp/all.yaml"
    rm -rf "$STAGES"
    mv "$STAGES.tmp" "$STAGES"
}

build_etcd() {
    local dir="$BUILD/etcd-$ETCD_VERSION" gomod godir
    mkdir -p "$dir"
    gomod=$(mod_field "go.etcd.io/etcd/server/v3@$ETCD_VERSION" GoMod)
    godir=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")
    cat >"$dir/go.mod" <<EOF
module maily.local/etcd-build

go ${godir:-1.24}

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
    # etcd's own main.go (go.etcd.io/etcd/v3 at the repository root) is exactly this.
    cat >"$dir/main.go" <<'EOF'
// etcd, built from go.etcd.io/etcd/server/v3 at the version pinned in go.mod.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
EOF
    rm -f "$dir/go.sum"
    (cd "$dir" && run_logged "$LOGS/etcd.log" go mod tidy)
    (cd "$dir" && run_logged "$LOGS/etcd.log" go build -trimpath -ldflags '-s -w' -o "$BIN/etcd" .)
}

build_kwok() {
    local dir="$BUILD/kwok-$KWOK_VERSION"
    mkdir -p "$dir"
    # kwok's go.mod has no replace directives, so `go install pkg@version` takes it as is.
    (cd "$dir" && run_logged "$LOGS/kwok.log" env GOBIN="$BIN" \
        go install -trimpath -ldflags '-s -w' "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")
}

# k8s.io/kubernetes requires its staging modules (k8s.io/api, k8s.io/apiserver,
# ...) at v0.0.0 and replaces them with ./staging/src/... paths, which a module
# zip does not carry. A throwaway main module requires k8s.io/kubernetes and
# replaces each staging module, listed from that release's own go.mod, by its
# published v0.<minor>.<patch> twin.
KUBE_DIR="$BUILD/kubernetes-$K8S_VERSION"

resolve_kubernetes() {
    local gomod info staging_version replaces count godir
    mkdir -p "$KUBE_DIR"
    gomod=$(mod_field "k8s.io/kubernetes@$K8S_VERSION" GoMod)
    info=$(mod_field "k8s.io/kubernetes@$K8S_VERSION" Info)
    staging_version="v0.${K8S_VERSION#v1.}"
    replaces=$(awk -v ver="$staging_version" '
        /^replace[[:space:]]*\(/ { block = 1; next }
        block && /^\)/ { block = 0; next }
        block && $2 == "=>" && $3 ~ /^\.\/staging\// { printf "\t%s => %s %s\n", $1, $1, ver }
        !block && $1 == "replace" && $3 == "=>" && $4 ~ /^\.\/staging\// { printf "\t%s => %s %s\n", $2, $2, ver }
    ' "$gomod")
    count=$(grep -c '=>' <<<"$replaces" || true)
    [ "$count" -ge 20 ] || die "found only $count staging replaces in $gomod"
    godir=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")
    {
        echo "module maily.local/kubernetes-build"
        echo
        echo "go ${godir:-1.24.0}"
        echo
        grep '^godebug ' "$gomod" || true
        echo
        echo "require k8s.io/kubernetes $K8S_VERSION"
        echo
        echo "// $count staging modules, from the replace block of k8s.io/kubernetes@$K8S_VERSION's go.mod"
        echo "replace ("
        printf '%s\n' "$replaces"
        echo ")"
    } >"$KUBE_DIR/go.mod"
    rm -f "$KUBE_DIR/go.sum"
    # Reproducible buildDate: the release's publication time.
    sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info" >"$KUBE_DIR/build-date"
    local pkgs=() b
    for b in "${KUBE_BINARIES[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b@$K8S_VERSION"); done
    (cd "$KUBE_DIR" && run_logged "$LOGS/kubernetes.log" go get "${pkgs[@]}")
}

build_kubernetes() {
    local major minor rest build_date ldflags pkg b pkgs=()
    rest=${K8S_VERSION#v}
    major=${rest%%.*}; rest=${rest#*.}
    minor=${rest%%.*}
    build_date=$(cat "$KUBE_DIR/build-date")
    ldflags="-s -w"
    # As kubernetes' hack/lib/version.sh sets them, so --version and /version tell the truth.
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=${build_date:-1970-01-01T00:00:00Z}"
        ldflags+=" -X $pkg.gitCommit="  # unknown from a module zip; blank rather than '$Format:%H$'
    done
    for b in "${KUBE_BINARIES[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
    # The tags upstream's hack/lib/golang.sh uses for release builds; one go build
    # for the three binaries so shared packages compile once.
    (cd "$KUBE_DIR" && run_logged "$LOGS/kubernetes.log" \
        go build -trimpath -tags selinux,notest,grpcnotrace -ldflags "$ldflags" -o "$BIN/" "${pkgs[@]}")
}

check_versions() { # DIR: every binary runs and says its pinned version
    local dir=$1 out b
    for b in "${KUBE_BINARIES[@]}"; do
        out=$("$dir/$b" --version 2>&1) || die "$dir/$b --version failed: $out"
        [ "$out" = "Kubernetes $K8S_VERSION" ] || die "$dir/$b --version says '$out', want 'Kubernetes $K8S_VERSION'"
    done
    out=$("$dir/etcd" --version 2>&1) || die "$dir/etcd --version failed: $out"
    grep -q "^etcd Version: ${ETCD_VERSION#v}\$" <<<"$out" || die "$dir/etcd --version says '$out', want ${ETCD_VERSION#v}"
    out=$("$dir/kwok" --version 2>&1) || die "$dir/kwok --version failed: $out"
    grep -q "${KWOK_VERSION#v}" <<<"$out" || die "$dir/kwok --version says '$out', want ${KWOK_VERSION#v}"
}

# --- main -----------------------------------------------------------------------

T0=$EPOCHREALTIME
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.lock"
if ! flock -n 9; then
    log "another run holds $CACHE_ROOT/.lock; waiting"
    flock 9
fi

if [ -n "${MAILY_K8S_BIN:-}" ]; then
    have_binaries "$MAILY_K8S_BIN" || die "MAILY_K8S_BIN=$MAILY_K8S_BIN lacks one of: ${ALL_BINARIES[*]}"
    check_versions "$MAILY_K8S_BIN"
    log "MAILY_K8S_BIN=$MAILY_K8S_BIN holds ${ALL_BINARIES[*]} at the pinned versions; building nothing"
    mkdir -p "$DEST" "$LOGS"
    [ -f "$DEST/.done-crds" ] || { step "copying CRDs" copy_crds; touch "$DEST/.done-crds"; }
    [ -f "$DEST/.done-stages" ] || { step "copying kwok's default stages" copy_kwok_stages; touch "$DEST/.done-stages"; }
    # `current` names the tuple for its CRDs and stages; the tests take
    # the binaries from MAILY_K8S_BIN.
    ln -sfn "$TUPLE" "$CACHE_ROOT/current"
    log "bin:    $MAILY_K8S_BIN"
    log "crds:   $CACHE_ROOT/current/crds"
    log "stages: $CACHE_ROOT/current/kwok-stages/all.yaml"
    exit 0
fi

if [ -f "$DEST/.complete" ] && have_binaries "$BIN" && [ -f "$CRDS/gateway-api/gateway.networking.k8s.io_httproutes.yaml" ] && [ -f "$STAGES/all.yaml" ]; then
    log "reusing $DEST"
else
    rm -f "$DEST/.complete"
    mkdir -p "$BIN" "$BUILD" "$LOGS"
    log "building $TUPLE into $DEST with $(go version) (logs in $LOGS)"
    [ -f "$DEST/.done-crds" ] || { step "copying CRDs (gateway-api $GATEWAY_API_VERSION, prometheus-operator $PROMETHEUS_OPERATOR_VERSION)" copy_crds; touch "$DEST/.done-crds"; }
    [ -f "$DEST/.done-etcd" ] || { step "building etcd $ETCD_VERSION" build_etcd; touch "$DEST/.done-etcd"; }
    [ -f "$DEST/.done-kwok" ] || { step "building kwok $KWOK_VERSION" build_kwok; touch "$DEST/.done-kwok"; }
    [ -f "$DEST/.done-stages" ] || { step "copying kwok's default stages" copy_kwok_stages; touch "$DEST/.done-stages"; }
    if [ ! -f "$DEST/.done-kubernetes" ]; then
        step "resolving and downloading k8s.io/kubernetes $K8S_VERSION and its modules" resolve_kubernetes
        step "building ${KUBE_BINARIES[*]} $K8S_VERSION" build_kubernetes
        touch "$DEST/.done-kubernetes"
    fi
    check_versions "$BIN"
    printf '%s\nbuilt %s with %s\n' "$TUPLE" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(go version)" >"$DEST/.complete"
fi

ln -sfn "$TUPLE" "$CACHE_ROOT/current"
log "bin:    $CACHE_ROOT/current/bin ($(cd "$BIN" && echo *))"
log "crds:   $CACHE_ROOT/current/crds ($(cd "$CRDS" && echo */*.yaml | wc -w) files)"
log "stages: $CACHE_ROOT/current/kwok-stages/all.yaml (kwok's defaults; add your own stages to a --config beside it)"
log "ready (took $(since "$T0") s)"
