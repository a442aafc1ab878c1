"""Servers of other projects for `make bench-peers`, each run by the Python of its own
venv under .bench/ (tools/bench/venvs.sh). They never import maas."""
