"""Adapters: the one seam per kind of I/O (git, Docker, ECR, ECS)."""
