"""Secrets out of text a person will read: values of settings named like a secret."""

from __future__ import annotations

import re

#: a setting whose value is secret: admin.token, *password*, *secret*, *key* (key_file too)
SECRET_NAME = re.compile(r"token|password|passwd|secret|key", re.IGNORECASE)
_ASSIGNMENT = re.compile(r"^(?P<prefix>-o|--override=|--set=)?(?P<name>[\w.\[\]-]+)=(?P<value>.*)$",
                         re.DOTALL)
HIDDEN = "***"


def redact_argument(argument: str) -> str:
    """``-o admin.token=s3cret`` → ``-o admin.token=***`` (other arguments unchanged)."""
    found = _ASSIGNMENT.match(argument)
    if found is None or not SECRET_NAME.search(found["name"]):
        return argument
    return f"{found['prefix'] or ''}{found['name']}={HIDDEN}"


def redact_command(arguments: list[str]) -> str:
    """A command line to show, each secret setting's value replaced by ``***``."""
    return " ".join(redact_argument(a) for a in arguments)
