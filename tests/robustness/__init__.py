"""Robustness: hostile input, certificates and configurations, and load, on the real server."""
