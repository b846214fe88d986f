"""Secrets out of text a person will read: values of settings named like a secret."""

from __future__ import annotations

import re

from broker.config.checks import safe_url

#: a setting whose value is secret: admin.token, *password*, *secret*, *key* (key_file too)
SECRET_NAME = re.compile(r"token|password|passwd|secret|key", re.IGNORECASE)
HIDDEN = "***"


def redact_argument(argument: str) -> str:
    """``-o admin.token=s3cret`` → ``-o admin.token=***``; the password in a URL
    (``-o database.url=postgresql://mwl:s3cret@db/mwl``) and secret URL parameters are
    hidden too; other arguments are unchanged.

    Whatever spelling argparse accepted (``--option=admin.token=…``, ``--opt=…``,
    ``-oadmin.token=…``, ``-o=…``, spaces around the name): everything after the first ``=``
    whose left side, back to the previous ``=`` or the start, names a secret is hidden.
    """
    start = 0
    while (equals := argument.find("=", start)) >= 0:
        if SECRET_NAME.search(argument, start, equals):
            return f"{argument[:equals]}={HIDDEN}"
        start = equals + 1
    return safe_url(argument)  # a database URL's password, ?password=… of any setting


def redact_command(arguments: list[str]) -> str:
    """A command line to show, each secret setting's value replaced by ``***``."""
    return " ".join(redact_argument(a) for a in arguments)
