"""Servers to compare against, driven by the same load generator (``bench.loadgen``)."""
