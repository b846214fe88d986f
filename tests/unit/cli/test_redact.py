"""Values of secret settings are hidden in command lines shown to a person."""

from __future__ import annotations

import pytest

from broker.cli.commands import build_parser
from broker.cli.redact import redact_argument, redact_command
from broker.config.checks import safe_url


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


@pytest.mark.parametrize("arguments", [
    ["-o", "admin.token=TOPSECRET"], ["-oadmin.token=TOPSECRET"], ["-o=admin.token=TOPSECRET"],
    ["--option=admin.token=TOPSECRET"], ["--option", "admin.token=TOPSECRET"],
    ["--opt=admin.token=TOPSECRET"], ["--o=admin.token=TOPSECRET"],
    ["--opti", "admin.token=TOPSECRET"],
    ["-o", " admin.token =TOPSECRET"], ["--option=database.password=TOPSECRET"]])
def test_every_spelling_argparse_accepts_for_the_option_is_redacted(arguments: list[str]) -> None:
    command = ["mwl-broker", "serve", "-o", "mllp.port=2575", *arguments]
    parsed = build_parser().parse_args(command[1:])
    assert any("TOPSECRET" in option for option in parsed.option)  # the broker would use it
    shown = redact_command(command)
    assert "TOPSECRET" not in shown
    assert shown.startswith("mwl-broker serve -o mllp.port=2575 ")


def test_a_value_with_an_equals_sign_is_hidden_whole() -> None:
    assert redact_argument("--option=admin.token=a=b") == "--option=admin.token=***"
    config = "--config=/etc/mwl-broker/broker.yaml"
    assert redact_argument(config) == config


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://mwl:hunter2@db:5432/mwl", "postgresql://mwl:***@db:5432/mwl"),
    ("postgresql://mwl:p@ss@db/mwl", "postgresql://mwl:***@db/mwl"),
    ("postgresql://mwl@127.0.0.1:1/mwl?password=hunter2&sslmode=require",
     "postgresql://mwl@127.0.0.1:1/mwl?password=***&sslmode=require"),
    ("postgresql://db/mwl?user=mwl&sslpassword=hunter2", "postgresql://db/mwl?user=mwl&sslpassword=***"),
    ("host=db user=mwl password=hunter2 dbname=mwl", "host=db user=mwl password=*** dbname=mwl"),
    ("host=db password='hun ter2' dbname=mwl", "host=db password=*** dbname=mwl"),
    ("postgresql://mwl@db/mwl", "postgresql://mwl@db/mwl"),
    ("postgresql:///mwl?host=/run/postgresql", "postgresql:///mwl?host=/run/postgresql"),
])
def test_database_urls_lose_their_passwords(url: str, shown: str) -> None:
    assert safe_url(url) == shown
    assert "hunter2" not in redact_argument(f"database.url={url}")
    assert "hunter2" not in redact_command(["mwl-broker", "serve", "-o", f"database.url={url}"])
