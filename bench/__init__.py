"""The benchmark: the daemon against fabfuel/ecs-deploy on the sandbox AWS.

`python -m bench.run [--quick]` starts the sandbox (moto with rolling-update progression), uses
the local registry and dockerd, makes git repositories, runs every scenario and prints one
table. See bench/README.md for what each figure measures and bench/RESULTS.md for a full run.
"""
