"""Values of secret settings are hidden in command lines shown to a person."""

from __future__ import annotations

import pytest

from broker.cli.redact import redact_argument, redact_command


@pytest.mark.parametrize("argument", [
    "admin.token=abc", "admin.token_file=/run/credentials/admin-token",
    "database.password=p w", "outbound.destinations[0].tls.key_file=/etc/k.pem",
    "x.client_secret=s", "--override=admin.token=abc", "admin.TOKEN=abc"])
def test_secret_settings_lose_their_value(argument: str) -> None:
    shown = redact_argument(argument)
    assert shown.endswith("=***")
    assert shown.split("=")[0] == argument.split("=")[0]


@pytest.mark.parametrize("argument", ["mllp.port=2575", "-o", "serve", "dicom.host=0.0.0.0",
                                      "/usr/bin/mwl-broker"])
def test_other_arguments_are_kept(argument: str) -> None:
    assert redact_argument(argument) == argument


def test_a_command_line() -> None:
    assert redact_command(["mwl-broker", "serve", "-o", "admin.token=s3cret", "-o",
                           "mllp.port=1"]) == "mwl-broker serve -o admin.token=*** -o mllp.port=1"
