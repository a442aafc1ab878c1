"""`python -m tools.bench`: the same as `maas bench`."""

from __future__ import annotations

import argparse
import sys

from tools.bench import add_arguments, run


def main() -> int:
    """Parse the flags and run the benchmark."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench")
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
