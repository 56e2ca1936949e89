"""Adapters: the one seam per kind of I/O (git, Docker, registries, ECR, ECS, AWS). May import
decisions, aio, config and the foundation (errors, logs, metrics); never app or anything above."""
