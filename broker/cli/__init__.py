"""The mwl-broker command line: one module per command family."""

from broker.cli.commands import main

__all__ = ["main"]
