"""reconciler: keeps AWS ECS services running the image built from a tracked git revision."""

__version__ = "0.1.0"
