"""Fault and soak harness: the whole system as separate processes, under steady load.

`python -m tools.chaos` injects each fault in turn and prints requests sent and
failed and the time to recover (`make chaos`); `python -m tools.chaos.soak`
samples every service's RSS and open file descriptors under load (`make soak`).
"""
