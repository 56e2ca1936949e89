"""The HTTP face: routes, webhooks and the dashboard (web/). May import app, adapters,
decisions and below; never cluster, feedback, daemon or cli."""
