"""The settings a command runs with: the file (``-c`` or $MWL_BROKER_CONFIG) and ``-o``
overrides over the embedded defaults."""

from __future__ import annotations

import argparse
import os

from broker.config import Settings
from broker.config.loading import apply_overrides, load_settings


def settings_of(args: argparse.Namespace) -> Settings:
    path = args.config or os.environ.get("MWL_BROKER_CONFIG")
    settings = load_settings(path)
    return apply_overrides(settings, args.option or [])
