"""Feedback: commit statuses and deployments on the forge, and messages in chat and mail.

Best effort and never in a deploy's way: the dispatcher hears the event bus (which never
blocks a pass), and each target has its own bounded queue and sender with retries, so a
forge that is down or hangs delays only its own deliveries. Modules:

- translate: events -> intents (pure);
- record: per app and commit, what should be shown and what was sent, on disk;
- routing: which forge an app's repository lives on;
- forges: GitHub (gidgethub) and GitLab (REST over aiohttp) requests;
- chat: messages through Apprise;
- lane: a target's queue and sender, with backoff;
- dispatcher: the whole, as the daemon runs it.

May import app, adapters, decisions, aio, config and the foundation; never cluster, api,
daemon or cli.
"""

from reconciler.feedback.dispatcher import Dispatcher

__all__ = ["Dispatcher"]
