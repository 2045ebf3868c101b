"""Benchmarks of the webhook service: `make bench` (see bench/__main__.py)."""
