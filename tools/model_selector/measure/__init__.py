"""Measuring: the in-process router, evaluate, tune, the benchmarks and the plain KMeans baseline."""
