#!/usr/bin/env bash
# Separate virtual environments for the independent checks, under .bench/:
#   perf      perf_analyzer, the copy bundled in tritonclient 2.51.0 (newer perf-analyzer
#             wheels need a newer glibc than Debian 12), with Debian's libb64 and PyPI's
#             CUDA runtime library on LD_LIBRARY_PATH (see tools/bench/perf_analyzer.py)
#   pytriton  NVIDIA PyTriton (bundles a Triton server; runs on CPU)
#   kserve    KServe's Python ModelServer
#   prof      py-spy, for profiling a running service (py-spy record -p PID)
#   floor     the Python gRPC servers that tools/bench/server_floor.py compares: grpc.aio,
#             grpclib, pyvoy (Envoy) and hypercorn, grpcio pinned to the one in .venv
# Each is built once; a stamp file marks a finished one.
# Usage: venvs.sh [perf|pytriton|kserve|prof|floor]... (default: perf pytriton kserve)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
DIR=.bench

make_venv() {  # name, packages...
    local name=$1; shift
    local venv=$DIR/$name
    if [[ -f $venv/.installed ]]; then return 0; fi
    echo "bench: building $venv ($*)" >&2
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q "$@"
    touch "$venv/.installed"
}

perf() {
    if ! ldconfig -p | grep -q 'libb64\.so\.0d'; then
        if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq && apt-get install -y -qq --no-install-recommends libb64-0d >/dev/null
        else
            echo "bench: perf_analyzer needs Debian's libb64-0d: apt-get install libb64-0d" >&2
            return 1
        fi
    fi
    make_venv perf 'tritonclient[all]==2.51.0' nvidia-cuda-runtime-cu12
}

pytriton() { make_venv pytriton nvidia-pytriton onnxruntime numpy; }
kserve() { make_venv kserve kserve onnxruntime numpy; }
prof() { make_venv prof py-spy; }
floor() { make_venv floor grpcio==1.85.3 uvloop psutil grpclib==0.4.9 pyvoy==1.3.0 hypercorn==0.18.0; }

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(perf pytriton kserve)
for t in "${targets[@]}"; do
    case $t in
        perf|pytriton|kserve|prof|floor) "$t" ;;
        *) echo "unknown venv '$t', expected perf, pytriton, kserve, prof or floor" >&2; exit 2 ;;
    esac
done
