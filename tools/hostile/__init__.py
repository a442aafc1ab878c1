"""Hostile clients against a whole maas system: what a bad request costs, and what it reveals.

`python -m tools.hostile` (make hostile) starts the three services as processes,
replays each category of issue B's hostile requests, and reports the status codes
seen, the longest event-loop stall a concurrent probe saw, the peak RSS growth of
each service, and any client-visible message that leaks a path, a class name or a
traceback.
"""
