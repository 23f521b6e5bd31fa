"""Benchmarks that print their figures (not tests): `python -m benchmarks.NAME`."""
