"""The systemd unit: ``systemd-analyze verify`` accepts it, and it is hardened as documented."""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from broker.config import ConfigError, Settings
from broker.config.loading import apply_overrides
from tests.support.broker import ROOT, BrokerProcess

UNIT = ROOT / "systemd" / "mwl-broker.service"
INSTALLED = "/opt/mwl-broker/bin/mwl-broker"


def directives(text: str, section: str = "Service") -> dict[str, list[str]]:
    """Key → values (a key may repeat) of one section of a unit file."""
    out: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: run scripts/install-system-deps.sh (systemd)"
    text = UNIT.read_text()
    assert INSTALLED in text
    binary = Path(sys.executable).parent / "mwl-broker"
    assert binary.exists()
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(INSTALLED, str(binary)))  # verify needs the binary to exist
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if UNIT.name in line or str(tmp_path) in line]
    assert result.returncode == 0, result.stdout + result.stderr
    assert complaints == []


def test_the_unit_is_hardened() -> None:
    service = directives(UNIT.read_text())
    expected = {
        "DynamicUser": "yes", "StateDirectory": "mwl-broker",
        "ConfigurationDirectory": "mwl-broker", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "Restart": "on-failure",
        "ExecReload": "/bin/kill -HUP $MAINPID", "Type": "simple",
        "ExecStart": f"{INSTALLED} serve -c /etc/mwl-broker/broker.yaml",
    }
    assert {key: service.get(key, [""])[0] for key in expected} == expected
    assert "@system-service" in service["SystemCallFilter"]
    assert "User" not in service  # DynamicUser allocates it


def test_the_unit_bounds_the_service_and_passes_secrets_as_credentials() -> None:
    service = directives(UNIT.read_text())
    assert service["MemoryMax"] == ["1G"] and service["TasksMax"] == ["512"]
    assert {"admin-token", "mllp-tls-key", "dicom-tls-key"} <= set(service["LoadCredential"])
    guide = (ROOT / "systemd" / "README.md").read_text()
    assert "admin.token_file: ${CREDENTIALS_DIRECTORY}/admin-token" in guide
    assert "/etc/credstore/admin-token" in guide


def test_serve_reads_the_admin_token_from_the_credentials_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = tmp_path / "credentials"  # as systemd makes it: the service's user only
    credentials.mkdir(mode=0o500)
    token = credentials / "admin-token"
    token.write_text("token-from-systemd\n")
    token.chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    broker = BrokerProcess(tmp_path, ("admin.token_file=${CREDENTIALS_DIRECTORY}/admin-token",))
    broker.start()
    try:
        url = f"http://127.0.0.1:{broker.admin_port}/api/messages"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 401
        request = urllib.request.Request(
            url, headers={"Authorization": "Bearer token-from-systemd"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200
    finally:
        broker.stop()
        credentials.chmod(0o700)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError, match=r"admin.token_file .*CREDENTIALS_DIRECTORY.* not set"):
        apply_overrides(Settings(), ["admin.token_file=${CREDENTIALS_DIRECTORY}/admin-token"])
