"""The generated stubs live under the project's own namespace, not as generic top-level
names that other PyPI packages own (`inference`, `maas`)."""

from __future__ import annotations

import subprocess
import sys


def test_stubs_import_from_maas_proto_and_no_generic_top_level_package_is_installed() -> None:
    code = (
        "import importlib.util as u\n"
        "from maas_proto.inference import grpc_predict_v2_pb2 as pb\n"
        "from maas_proto.registry.v1 import registry_pb2 as rb\n"
        "print(pb.DESCRIPTOR.package, rb.DESCRIPTOR.package,"
        " u.find_spec('inference') is None, u.find_spec('maas') is None)\n"
    )
    # A fresh interpreter outside the repository, so only what is installed is found.
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    # The wire packages are unchanged: `inference` (KServe v2) and `maas.registry.v1`.
    assert out.stdout.split() == ["inference", "maas.registry.v1", "True", "True"]
