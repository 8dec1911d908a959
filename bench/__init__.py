"""Benchmarks: they print figures beside baselines and never pass or fail on a stopwatch.

Run them all with `make bench` (`python -m bench`); `--quick` runs small sizes.
"""
