"""Evaluation: benchmarks through lm-evaluation-harness and held-out instructions."""
