"""Several daemons sharing one config: per-app leases in a DynamoDB table.

assignment.py decides who should own what (pure); lease.py says whether a lease may still
be acted on (pure, over a clock); table.py is the DynamoDB adapter; store.py keeps app state
in the same table; fenced.py refuses AWS writes for apps whose lease is not valid;
ownership.py answers the daemon (who owns an app, what its owner published) and passes its
nudges and syncs on; manager.py runs the round that heartbeats, takes, hands over and tells
the daemon's tenant what to run.

May import app, adapters, decisions, aio, config and the foundation; never feedback, api,
daemon or cli.
"""
