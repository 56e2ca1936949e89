"""The `reconciler` command: one module per command group. The top layer: nothing imports it."""
