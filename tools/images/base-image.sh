#!/usr/bin/env bash
# Make a Python 3.11 base image locally, for machines that cannot pull `python:*`:
# debootstrap (minbase, bookworm: Debian's python3 is 3.11) with python3-venv and
# ca-certificates, then `docker import`. The image carries the host's CA bundle, so that
# pip inside a build trusts what the host trusts (a TLS proxy's CA, for one).
#   tools/images/base-image.sh IMAGE [MIRROR]
# Needs root (debootstrap) and a Docker engine; takes about 2 minutes.
set -euo pipefail
image=${1:?usage: base-image.sh IMAGE [MIRROR]}
mirror=${2:-http://deb.debian.org/debian}
docker=${DOCKER:-docker}
bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
command -v debootstrap >/dev/null || {
    echo "base-image: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
[ -s "$bundle" ] || { echo "base-image: no CA bundle at $bundle (set CA_BUNDLE)" >&2; exit 1; }
root=$(mktemp -d /tmp/maas-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -20 "$root.log" >&2; echo "base-image: debootstrap failed (log above)" >&2; exit 1; }
rm -f "$root.log"
cp "$bundle" "$root/etc/ssl/certs/ca-certificates.crt"
# What an image never needs: package caches, documentation, locales but C.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/var/log/*.log "$root"/tmp/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'C*' -exec rm -rf {} + 2>/dev/null || true
tar -C "$root" -c . | "$docker" import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' \
    - "$image" >/dev/null
echo "base-image: $image ($("$docker" image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
