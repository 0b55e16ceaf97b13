"""Synthetic footage with a known ground truth, made from real face photos (tests, benchmarks, the demo)."""
