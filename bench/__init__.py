"""Benchmarks that start what they need on loopback and print ratios measured side by side."""
