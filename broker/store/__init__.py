"""Persistence: the only package that holds SQL."""
