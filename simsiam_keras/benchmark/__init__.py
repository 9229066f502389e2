"""Throughput and memory measurements (never asserted in tests)."""
