#!/usr/bin/env bash
# Make a Docker engine reachable, the way these machines allow: Debian's docker.io, and
# dockerd with no bridge network and no iptables rules (images build and run with
# --network host). Exits 0 when `docker info` answers, else 1 with one line saying why.
#   tools/images/docker-engine.sh          (as root to install or start anything)
set -uo pipefail
docker=${DOCKER:-docker}
log=${DOCKERD_LOG:-/tmp/maas-dockerd.log}
"$docker" info >/dev/null 2>&1 && exit 0
why() { echo "docker engine: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || why "none reachable, and starting one needs root"
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    command -v apt-get >/dev/null || why "dockerd is not installed and there is no apt-get"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
        docker.io debootstrap; } >"$log" 2>&1 || why "apt-get install docker.io failed ($log)"
fi
if [ ! -s /etc/docker/daemon.json ]; then
    mkdir -p /etc/docker
    echo '{"bridge": "none", "iptables": false}' >/etc/docker/daemon.json
fi
nohup dockerd >>"$log" 2>&1 &
for _ in $(seq 60); do
    "$docker" info >/dev/null 2>&1 && exit 0
    kill -0 $! 2>/dev/null || why "dockerd exited: $(tail -1 "$log")"
    sleep 1
done
why "dockerd did not answer within 60 s ($log)"
