"""Helpers shared by the test suite: real services, real git repositories."""
