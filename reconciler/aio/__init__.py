"""Generic asyncio helpers (backoff, batching, loopback addresses) that know nothing of apps,
AWS or git; imports nothing of reconciler."""
