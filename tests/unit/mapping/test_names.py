"""Names in several scripts: PID-5 repetitions → the PN component groups (alphabetic =
ideographic = phonetic), by XPN-8 or, without it, by the policy (broker.mapping.names)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.hl7.ack import Hl7Error
from broker.hl7.message import parse
from broker.mapping import names
from broker.mapping.engine import map_message
from broker.mapping.schema import MappingLoadError, load_mappings
from broker.mapping.transforms import TransformContext, person_name
from broker.model.orders import PatientUpdate

ROOT = Path(__file__).resolve().parents[3]
MSG = parse("MSH|^~\\&|RIS|HOSP|PACS|RAD|20240101||ADT^A08|1|P|2.5.1\rPID|||1")
SCRIPT = {"groups": "script"}
POSITION = {"groups": "position"}


def pn(field: str, param: Any = None) -> tuple[str, list[str]]:
    """The PN of a PID-5 field (repetitions separated by ~), and the notes."""
    ctx = TransformContext(MSG, {})
    (out,) = person_name(field.split("~"), ctx, param)
    return out, ctx.notes


@pytest.mark.parametrize("policy", [SCRIPT, POSITION, None])
def test_chinese_alphabetic_then_ideographic_without_xpn8(policy: Any) -> None:
    # today's senders: no XPN-8; the ideographic repetition used to be dropped silently
    assert pn("WANG^XIAOMING~王^小明", policy) == ("WANG^XIAOMING=王^小明", [])


def test_script_policy_ignores_the_order_of_repetitions() -> None:
    assert pn("王^小明~WANG^XIAOMING", SCRIPT) == ("WANG^XIAOMING=王^小明", [])
    assert pn("王^小明~WANG^XIAOMING", POSITION) == ("王^小明=WANG^XIAOMING", [])


@pytest.mark.parametrize("policy", [SCRIPT, POSITION])
def test_japanese_three_groups_ps3_5_annex_h(policy: Any) -> None:
    assert pn("Yamada^Tarou~山田^太郎~やまだ^たろう", policy) == (
        "Yamada^Tarou=山田^太郎=やまだ^たろう", [])


def test_japanese_kanji_and_katakana_without_romaji() -> None:
    assert pn("山田^太郎~ヤマダ^タロウ", SCRIPT) == ("=山田^太郎=ヤマダ^タロウ", [])
    assert pn("山田^太郎~ﾔﾏﾀﾞ^ﾀﾛｳ", SCRIPT)[0] == "=山田^太郎=ﾔﾏﾀﾞ^ﾀﾛｳ"  # half-width kana
    assert pn("山田^太郎~ヤマダ^タロウ", POSITION)[0] == "山田^太郎=ヤマダ^タロウ"


def test_mixed_kanji_and_kana_is_ideographic() -> None:
    assert names.script_group("佐々木^さくら") == "I"


def test_korean_ps3_5_annex_i() -> None:
    assert pn("Hong^Gildong~洪^吉洞~홍^길동", SCRIPT) == ("Hong^Gildong=洪^吉洞=홍^길동", [])
    assert pn("홍^길동", SCRIPT) == ("홍^길동", [])  # a lone name stays in the first group


@pytest.mark.parametrize("text", ["Müller^Jürgen", "Ørsted^Hans", "Петров^Иван", "Ωμέγα"])
def test_latin_and_other_scripts_are_alphabetic(text: str) -> None:
    assert names.script_group(text) == "A"


def test_xpn8_wins_over_the_characters() -> None:
    assert pn("山田^太郎^^^^^^A~Yamada^Tarou^^^^^^I", SCRIPT)[0] == "山田^太郎=Yamada^Tarou"


def test_a_group_named_by_xpn8_is_not_taken_by_a_guessed_repetition() -> None:
    out, notes = pn("WANG^XIAOMING~LI^MEI^^^^^^A", SCRIPT)
    assert out == "LI^MEI"
    assert notes == ["repetition 1 left out: by its characters it is alphabetic, a group "
                     "repetition 2 already fills"]


def test_fourth_repetition_by_position_is_noted() -> None:
    out, notes = pn("A^ONE~B^TWO~C^THREE~D^FOUR", POSITION)
    assert out == "A^ONE=B^TWO=C^THREE"
    assert notes == ["repetition 4 left out: the position policy fills only three groups "
                     "(alphabetic, ideographic, phonetic)"]


def test_two_repetitions_in_one_script_are_noted() -> None:
    out, notes = pn("DOE^JANE~SMITH^JANE", SCRIPT)
    assert out == "DOE^JANE"
    assert len(notes) == 1 and notes[0].startswith("repetition 2 left out")


def test_a_name_that_is_not_the_legal_name_is_left_out() -> None:
    # XPN-7 M (maiden name) is another name, not the same name in another script
    out, notes = pn("DOE^JANE^^^^^L~SMITH^JANE^^^^^M", POSITION)
    assert out == "DOE^JANE"
    assert notes == ["repetition 2 left out: its name type 'M' (XPN-7) is not one of L"]
    assert pn("DOE^JANE^^^^^L~JD^^^^^^D", {"groups": "position", "name_types": ["L", "D"]}
              )[0] == "DOE^JANE=JD"


def test_without_a_legal_name_the_first_name_is_kept() -> None:
    out, notes = pn("DOE^JANE^^^^^A~SMITH^JANE^^^^^M", SCRIPT)
    assert out == "DOE^JANE"
    assert len(notes) == 1 and "repetition 2" in notes[0]


def test_notes_carry_no_patient_data() -> None:
    _, notes = pn("SECRETNAME^X~OTHERNAME^Y~THIRD^Z~FOURTH^W", POSITION)
    assert notes and not any(word in n for n in notes for word in ("SECRET", "OTHER", "FOURTH"))


def test_the_engine_stores_each_note_as_a_warning_with_the_field() -> None:
    message = parse("MSH|^~\\&|RIS|HOSP|PACS|RAD|20240101||ADT^A08|1|P|2.5.1\r"
                    "PID|||P1^^^HOSP||WANG^XIAOMING~王^小明~LI^MEI^^^^^^A")
    warnings: list[Hl7Error] = []
    (event,) = map_message(message, load_mappings(ROOT / "mappings"), warnings)
    assert isinstance(event, PatientUpdate)
    assert event.patient.attrs["PatientName"] == "LI^MEI=王^小明"
    (warning,) = warnings
    assert (warning.severity, warning.code, warning.location) == ("W", 102, "PID-5[*]")
    assert warning.text.startswith("PatientName: repetition 1 left out")


def test_no_warning_when_every_repetition_has_its_place() -> None:
    message = parse("MSH|^~\\&|RIS|HOSP|PACS|RAD|20240101||ADT^A08|1|P|2.5.1\r"
                    "PID|||P1^^^HOSP||WANG^XIAOMING~王^小明")
    warnings: list[Hl7Error] = []
    map_message(message, load_mappings(ROOT / "mappings"), warnings)
    assert warnings == []


@pytest.mark.parametrize(("param", "error"), [
    ("{groups: alphabet}", "groups must be script or position"),
    ("{group: script}", "unknown option 'group'"),
    ("{name_types: L}", "name_types must be a list"),
    ("script", "person_name takes {groups"),
])
def test_policy_errors_name_file_and_line(tmp_path: Path, param: str, error: str) -> None:
    import shutil

    folder = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", folder)
    adt = folder / "adt.yaml"
    text = adt.read_text(encoding="utf-8")
    old = "transform: {person_name: {groups: script}}}"
    assert text.count(old) == 1
    adt.write_text(text.replace(old, f"transform: {{person_name: {param}}}}}"), "utf-8")
    line = next(i for i, s in enumerate(adt.read_text("utf-8").splitlines(), 1)
                if "person_name" in s and "PatientName" in s)
    with pytest.raises(MappingLoadError) as exc:
        load_mappings(folder)
    # once, although the section holding PatientName is used by several message mappings
    assert sum(e.startswith(f"{adt}:{line}: PatientName: ") and error in e
               for e in exc.value.errors) == 1, exc.value.errors
