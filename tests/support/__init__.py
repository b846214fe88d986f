"""Test support: sample messages, fixtures and peers shared by tests and benchmarks."""
