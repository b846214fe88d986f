"""Settings: broker.config.loading (load_settings, apply_overrides)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import PACKAGE_ROOT, ConfigError, SenderSettings, Settings
from broker.config.loading import apply_overrides, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broker.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# -- defaults ---------------------------------------------------------------------------------


def test_defaults() -> None:
    s = load_settings()
    assert s.mllp.port == 2575
    assert s.mllp.host == "0.0.0.0"
    assert s.mllp.max_frame_bytes == 1 << 20
    assert s.mllp.application == "MWLBROKER"
    assert s.dicom.port == 11112
    assert s.dicom.ae_title == "MWLBROKER"
    assert s.admin.host == "127.0.0.1"
    assert s.admin.port == 8080
    assert Path(s.database.path).parts[0] == "var"
    assert s.database.path.endswith(".sqlite")
    assert s.hl7.sniff_utf8 is True
    assert "2.3.1" in s.hl7.accepted_versions and "2.5.1" in s.hl7.accepted_versions
    assert s.hl7.accepted_processing_ids == ["P"]
    assert s.hl7.senders == [] and s.hl7.charset_aliases == {}
    assert s.logging.level == "INFO"


def test_default_mappings_directory_is_the_shipped_folder() -> None:
    s = Settings()
    assert Path(s.mappings.directory) == PACKAGE_ROOT / "mappings"
    assert (Path(s.mappings.directory) / "orders.yaml").is_file()


def test_defaults_are_not_shared_between_instances() -> None:
    a, b = Settings(), Settings()
    a.hl7.accepted_versions.append("9.9")
    a.mllp.port = 1
    assert "9.9" not in b.hl7.accepted_versions
    assert b.mllp.port == 2575


# -- YAML file --------------------------------------------------------------------------------


def test_yaml_overrides_only_what_it_names(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, (
        "mllp:\n  port: 3000\n  idle_timeout: 5\n"
        "dicom:\n  ae_title: MYMWL\n"
        "database:\n  path: /data/mwl.sqlite\n"
        "hl7:\n  sniff_utf8: false\n  accepted_versions: ['2.5.1']\n"
        "  charset_aliases: {LATIN1: latin-1}\n  fallback_charsets: [cp1252]\n"
        "  senders:\n    - {application: RIS, facility: HOSP, charset: gb18030}\n"
        "    - {application: LIS}\n")))
    assert s.mllp.port == 3000
    assert s.mllp.idle_timeout == 5.0 and isinstance(s.mllp.idle_timeout, float)
    assert s.mllp.host == "0.0.0.0"  # untouched
    assert s.dicom.ae_title == "MYMWL"
    assert s.dicom.port == 11112  # untouched
    assert s.database.path == "/data/mwl.sqlite"
    assert s.database.synchronous == "FULL"
    assert s.hl7.sniff_utf8 is False
    assert s.hl7.accepted_versions == ["2.5.1"]
    assert s.hl7.charset_aliases == {"LATIN1": "latin-1"}
    assert s.hl7.fallback_charsets == ["cp1252"]
    assert s.hl7.senders == [SenderSettings("RIS", "HOSP", "gb18030"),
                             SenderSettings("LIS", "", "")]
    assert s.admin.port == 8080


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "# nothing\n")) == Settings()


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(write(tmp_path, "- mllp\n"))


def test_unknown_section_with_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "mlp:\n  port: 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert str(path) in message
    assert "unknown setting 'mlp'" in message
    assert "did you mean 'mllp'?" in message


def test_unknown_key_with_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "dicom:\n  ae_titel: X\n"))
    message = str(info.value)
    assert "dicom" in message
    assert "unknown setting 'ae_titel'" in message
    assert "did you mean 'ae_title'?" in message


def test_unknown_key_without_close_match_has_no_suggestion(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "admin:\n  zzzzzz: 1\n"))
    assert "did you mean" not in str(info.value)


def test_unknown_key_inside_a_list_item(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"senders\[0\].*'charest'.*'charset'"):
        load_settings(write(tmp_path, "hl7:\n  senders:\n    - {application: RIS, charest: x}\n"))


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        ("mllp:\n  port: abc\n", "must be a number"),
        ("mllp:\n  port: true\n", "must be a number"),
        ("mllp: 5\n", "must be a mapping"),
        ("hl7:\n  sniff_utf8: 'yes please'\n", "must be true or false"),
        ("hl7:\n  accepted_versions: 2.5\n", "must be a list"),
        ("hl7:\n  charset_aliases: [a]\n", "must be a mapping"),
        ("dicom:\n  ae_title: [A, B]\n", "must be a text value"),
    ],
)
def test_type_errors(tmp_path: Path, yaml_text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_settings(write(tmp_path, yaml_text))


def test_scalars_are_converted_to_text(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "hl7:\n  accepted_versions: [2.5, '2.5.1']\n"
                                      "dicom:\n  ae_title: 123\n"))
    assert s.hl7.accepted_versions == ["2.5", "2.5.1"]
    assert s.dicom.ae_title == "123"


# -- overrides --------------------------------------------------------------------------------


def test_apply_overrides() -> None:
    s = apply_overrides(Settings(), [
        "mllp.port=3001", "dicom.ae_title=OTHER", "hl7.sniff_utf8=false",
        "hl7.accepted_versions=[2.5.1, 2.6]", "database.path = /tmp/x.sqlite",
        "mllp.idle_timeout=1.5",
    ])
    assert s.mllp.port == 3001
    assert s.dicom.ae_title == "OTHER"
    assert s.hl7.sniff_utf8 is False
    assert s.hl7.accepted_versions == ["2.5.1", "2.6"]
    assert s.database.path == "/tmp/x.sqlite"
    assert s.mllp.idle_timeout == 1.5


def test_apply_overrides_returns_the_same_object_and_later_wins() -> None:
    original = Settings()
    result = apply_overrides(original, ["admin.port=1", "admin.port=2"])
    assert result is original
    assert result.admin.port == 2


def test_apply_overrides_value_may_contain_equals_sign() -> None:
    s = apply_overrides(Settings(), ["mllp.facility=A=B"])
    assert s.mllp.facility == "A=B"


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("mllp.port", "must look like section.key=value"),
        ("mllp=3", "a section.s settings are section.key=value"),
        ("nosuch.port=1", "unknown section 'nosuch'"),
        ("mllp.prot=1", "unknown setting mllp.prot"),
        ("mllp.port=abc", "must be a number"),
        ("hl7.sniff_utf8=maybe", "must be true or false"),
    ],
)
def test_apply_overrides_errors(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        apply_overrides(Settings(), [override])


def test_failed_override_leaves_earlier_ones_applied() -> None:
    s = Settings()
    with pytest.raises(ConfigError):
        apply_overrides(s, ["admin.port=9", "admin.nope=1"])
    assert s.admin.port == 9


def test_empty_text_override_is_empty_not_none() -> None:
    s = apply_overrides(Settings(), ["mllp.facility="])
    assert s.mllp.facility == ""


def test_empty_text_setting_in_file_is_not_none(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "mllp:\n  facility:\n"))
    assert s.mllp.facility != "None"


def test_yaml_words_like_off_stay_text(tmp_path: Path) -> None:
    """YAML 1.1 reads OFF/on/yes as booleans; settings keep them as the words written."""
    from broker.config.loading import apply_overrides, load_settings

    conf = tmp_path / "broker.yaml"
    conf.write_text("database:\n  synchronous: OFF\nhl7:\n  sniff_utf8: false\n")
    settings = load_settings(conf)
    assert settings.database.synchronous == "OFF"
    assert settings.hl7.sniff_utf8 is False
    assert apply_overrides(settings, ["database.synchronous=NORMAL"]).database.synchronous == (
        "NORMAL")


@pytest.mark.parametrize("override,text", [
    ("dicom.charset=ISO_IR 144", "must be one of"),
    ("hl7.senders=[{application: RIS, charset: no-such-codec}]", "not a known character set"),
    ("hl7.fallback_charsets=[klingon]", "not a known character set"),
])
def test_unusable_character_sets_are_refused_at_start(override: str, text: str) -> None:
    from broker.config import ConfigError, Settings
    from broker.config.loading import apply_overrides

    with pytest.raises(ConfigError, match=text):
        apply_overrides(Settings(), [override])


# -- audit ------------------------------------------------------------------------------------


def test_audit_is_off_by_default_with_atna_defaults() -> None:
    a = load_settings().audit
    assert a.enabled is False
    assert (a.transport, a.port, a.facility) == ("tls", 6514, 10)
    assert a.spool_directory == "" and a.audit_source_id == ""


def test_audit_section_from_yaml(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, (
        "audit:\n  enabled: true\n  host: arr.example.org\n  port: 514\n  transport: tcp\n"
        "  spool_directory: /var/spool/mwl-audit\n  audit_source_id: MWL1\n"
        "  enterprise_site_id: RADIOLOGY\n  tls:\n    ca_file: /etc/arr-ca.pem\n")))
    a = s.audit
    assert (a.enabled, a.host, a.port, a.transport) == (True, "arr.example.org", 514, "tcp")
    assert (a.spool_directory, a.audit_source_id, a.enterprise_site_id) == (
        "/var/spool/mwl-audit", "MWL1", "RADIOLOGY")
    assert a.tls.ca_file == "/etc/arr-ca.pem"


@pytest.mark.parametrize(("yaml_text", "fragment"), [
    ("audit:\n  transport: beep\n", "audit.transport 'beep' must be tls, tcp or udp"),
    ("audit:\n  transport: tcp\n  tls: {enabled: true}\n", "set audit.transport: tls"),
    ("audit:\n  enabled: true\n  host: ''\n", "audit.enabled needs audit.host"),
    ("audit:\n  port: 0\n", "audit.port 0 must be 1 to 65535"),
    ("audit:\n  facility: 24\n", "audit.facility 24 must be 0 to 23"),
    ("audit:\n  timeout: 0\n", "audit.timeout 0.0 must be more than 0"),
    ("audit:\n  spool_max_bytes: -1\n", "audit.spool_max_bytes -1 must be more than 0"),
    ("audit:\n  trasport: tcp\n", "did you mean 'transport'"),
    ("audit:\n  port: '6514a'\n", "must be a number"),
])
def test_unusable_audit_settings_are_refused_naming_the_file(
        tmp_path: Path, yaml_text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as raised:
        load_settings(write(tmp_path, yaml_text))
    assert str(raised.value).startswith(str(tmp_path / "broker.yaml"))


def test_audit_overrides() -> None:
    s = apply_overrides(Settings(), ["audit.enabled=true", "audit.transport=udp",
                                     "audit.port=514"])
    assert (s.audit.enabled, s.audit.transport, s.audit.port) == (True, "udp", 514)
    with pytest.raises(ConfigError, match=r"audit\.transport 'smtp'"):
        apply_overrides(Settings(), ["audit.transport=smtp"])


def test_upstream_worklists(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, """
upstream_worklists:
  - name: ris-wl
    ae_title: RISWL
    host: 10.0.0.5
    port: 3000
    query: {modality: CT, days_before: 1, keys: {PatientID: "", "(0008,0090)": ""}}
"""))
    (u,) = settings.upstream_worklists
    assert (u.name, u.port, u.interval, u.remove_after, u.calling_ae) == ("ris-wl", 3000, 60.0,
                                                                          3, "")
    assert (u.query.modality, u.query.days_before, u.query.days_after) == ("CT", 1, 1)


@pytest.mark.parametrize(("body", "fragment"), [
    ("- {ae_title: X}", "needs a name"),
    ("- {name: a}", "needs an ae_title"),
    ("- {name: a, ae_title: X}\n  - {name: a, ae_title: Y}", "used more than once"),
    ("- {name: a, ae_title: X, port: 0}", "port 0 must be 1 to 65535"),
    ("- {name: a, ae_title: X, interval: 0}", "interval 0.0 must be more than 0"),
    ("- {name: a, ae_title: X, remove_after: 0}", "remove_after 0"),
    ("- {name: a, ae_title: X, query: {days_after: -1}}", "days_after must be 0 or more"),
    ("- {name: a, ae_title: X, query: {keys: {NoSuchKey: ''}}}", "NoSuchKey"),
])
def test_upstream_worklist_errors(tmp_path: Path, body: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match="upstream_worklists") as info:
        load_settings(write(tmp_path, "upstream_worklists:\n  " + body + "\n"))
    assert fragment in str(info.value)


def test_overrides_reach_top_level_lists_and_settings_inside_sections() -> None:
    s = apply_overrides(Settings(), [
        "upstream_worklists=[{name: ris-mwl, ae_title: RISMWL, port: 11112, interval: 5}]",
        "dicom.ups.subscribers=[{ae_title: WATCHER, port: 11113}]"])
    assert [(u.name, u.ae_title, u.port, u.interval) for u in s.upstream_worklists] == [
        ("ris-mwl", "RISMWL", 11112, 5.0)]
    assert [(w.ae_title, w.port) for w in s.dicom.ups.subscribers] == [("WATCHER", 11113)]
