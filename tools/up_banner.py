"""The banner `maas up` prints once everything serves: addresses, auth, TLS, and
commands that work as printed (tritonclient, grpcurl, the large demos' examples)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from tools.up_plan import DEMO_MODEL, LOOPBACK, Secrets, TlsFiles, tls_banner


class Listed(Protocol):
    """What the banner shows of a running service (tools.up.Process has it)."""

    name: str
    metrics_port: int
    http_port: int

    @property
    def address(self) -> str: ...


def banner(
    processes: Sequence[Listed],
    data_dir: str,
    creds: Secrets | None,
    *,
    large: bool = False,
    tls: TlsFiles | None = None,
) -> str:
    """How to call what is running."""
    by_name = {p.name: p for p in processes}
    gw = by_name["gateway"].address
    scheme = "https" if tls else "http"
    lines = ["", "maas is up."]
    for p in processes:
        metrics = f"metrics http://localhost:{p.metrics_port}/metrics" if p.metrics_port else ""
        lines.append(f"  {p.name:<12} {p.address:<16} {metrics}".rstrip())
        if p.http_port:
            lines.append(f"  {p.name + ' http':<12} {scheme}://localhost:{p.http_port}/v2")
    if creds:
        lines.append(f"  auth: ON.  admin token (registry): {creds.admin_token}")
        if creds.api_key is not None:
            lines.append(f"             API key (gateway):      {creds.api_key}")
            lines.append("             shown once; only their sha256 digests are stored.")
        else:
            lines.append(f"             API keys (gateway):     the keys in {creds.api_keys_file}")
            lines.append("             shown once; only its sha256 digest is stored.")
        lines.append(
            "             inference takes only the gateway's service token "
            "(never shown): call the gateway."
        )
        headers = ', headers={"authorization": "Bearer <API key>"}'
        grpcurl_auth = "-H 'authorization: Bearer <API key>' "
        curl_auth = "-H 'authorization: Bearer <API key>' "
        token = " --token <admin token>"
    else:
        lines += [
            "  auth: OFF (--no-auth). Anyone who can reach the gateway can call it, and any",
            "        local user the registry and inference. `maas up --auth` turns keys on.",
        ]
        headers = grpcurl_auth = curl_auth = token = ""
    shown = tls_banner(tls)
    lines += shown.lines
    grpc_tls, triton_tls, infer_tls = shown.grpcurl, shown.tritonclient, shown.maas_infer
    curl_auth = shown.curl + curl_auth
    token += shown.maas_models
    method = "inference.GRPCInferenceService/ModelMetadata"
    lines += [
        f"  registry and inference listen on {LOOPBACK} only; the gateway on every address.",
        f"  logs: {Path(data_dir).resolve() / 'logs'}",
        "",
        "Python (tritonclient):",
        "    import numpy as np, tritonclient.grpc as tc",
        f'    client = tc.InferenceServerClient("{gw}"{triton_tls})',
        '    x = tc.InferInput("input", [1, 1, 8, 8], "FP32")',
        "    x.set_data_from_numpy(np.zeros((1, 1, 8, 8), np.float32))",
        f'    print(client.infer("{DEMO_MODEL}", [x]{headers}).as_numpy("probabilities"))',
        "",
        "grpcurl:",
        f"    grpcurl {grpc_tls} {gw} list",
        f'    grpcurl {grpc_tls} {grpcurl_auth}-d \'{{"name": "{DEMO_MODEL}"}}\' {gw} {method}',
        "",
    ]
    http = by_name["gateway"].http_port
    http_url = f"{scheme}://localhost:{http}" if http else None
    if http_url:
        image = {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0] * 64}
        body = json.dumps({"inputs": [image]}, separators=(",", ":"))  # v2 JSON, flattened
        lines += [
            "curl (v2 REST):",
            f"    curl -s {curl_auth}{http_url}/v2/models/{DEMO_MODEL}/infer -d '{body}'",
            "",
        ]
    if large:
        from tools.demo.serve import examples

        lines += [*examples(gw, http_url, Path(data_dir), headers, curl_auth), ""]
    lines += [
        "Register another model (callable through the gateway within seconds):",
        f"    maas models register NAME model.onnx --alias production{token}",
        f"Classify an image:  maas infer {DEMO_MODEL} --input digit.png --gateway {gw}{infer_tls}",
        "",
        "Ctrl-C stops all three.",
    ]
    return "\n".join(lines)
