"""The gRPC channel the chart's scripts (wait_ready.py, smoke_test.py) open, and their TLS
flags. It sits beside them in the scripts ConfigMap, so `python /scripts/X.py` imports it
from the script's own directory."""

from __future__ import annotations

import argparse

import grpc


def open_channel(target: str, args: argparse.Namespace) -> grpc.Channel:
    """A TLS channel when --ca is given (mutual TLS with --cert/--key), else plaintext."""
    if not args.ca:
        return grpc.insecure_channel(target)
    with open(args.ca, "rb") as f:
        ca = f.read()
    key = cert = None
    if args.cert and args.key:
        with open(args.cert, "rb") as f:
            cert = f.read()
        with open(args.key, "rb") as f:
            key = f.read()
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(target, credentials, options=options)


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ca", help="CA bundle: connect with TLS")
    parser.add_argument("--cert", help="client certificate (mutual TLS)")
    parser.add_argument("--key", help="client key (mutual TLS)")
    parser.add_argument("--server-name", help="name to verify instead of the target's host")
