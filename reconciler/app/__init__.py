"""One app: its loop, the pass and its stages, and its record (state, status, events).
May import adapters, decisions, aio, config and the foundation; never cluster, feedback, api,
daemon or cli."""
