"""Benchmarks: alternatives run side by side in one process, printed as ratios."""
