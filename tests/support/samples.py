"""Synthetic HL7 messages for demos, benchmarks and tests (IHE RAD-2 style ORM^O01 v2.3.1)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class OrderSample:
    control_id: str
    patient_id: str = "PAT001"
    issuer: str = "HOSP"
    patient_name: str = "DOE^JANE"
    birth_date: str = "19700101"
    sex: str = "F"
    order_control: str = "NW"
    order_status: str = "SC"
    placer: str = "PLC001"
    filler: str = "FIL001"
    accession: str = "ACC001"
    requested_procedure_id: str = "RP001"
    study_uid: str | None = "1.2.826.0.1.3680043.8.498.1"
    modality: str = "CT"
    start: str = "202611221000"
    priority: str = "R"
    station: str = ""
    sps_ids: list[str] = field(default_factory=lambda: ["SPS001"])
    sending_application: str = "RIS"
    sending_facility: str = "HOSP"
    charset: str = ""
    version: str = "2.3.1"
    with_pid: bool = True

    def segments(self) -> list[str]:
        segs = [segment("MSH", {3: self.sending_application, 4: self.sending_facility,
                                5: "MWLBROKER", 6: "RAD", 7: "20261122093000", 9: "ORM^O01",
                                10: self.control_id, 11: "P", 12: self.version,
                                18: self.charset})]
        if self.with_pid:
            segs.append(segment("PID", {3: f"{self.patient_id}^^^{self.issuer}",
                                        5: self.patient_name, 7: self.birth_date, 8: self.sex}))
            segs.append(segment("PV1", {2: "O", 3: "RAD^^^HOSP",
                                        8: "1234^WELBY^MARCUS^^^DR", 19: "VISIT001^^^HOSP"}))
        timing = f"^^^{self.start}^^{self.priority}"
        for index, sps in enumerate(self.sps_ids, start=1):
            segs.append(segment("ORC", {1: self.order_control, 2: self.placer, 3: self.filler,
                                        5: self.order_status, 7: timing, 9: "20261122093000",
                                        12: "4321^HOUSE^GREGORY^^^DR", 18: self.station}))
            segs.append(segment("OBR", {
                1: str(index), 2: self.placer, 3: self.filler,
                4: "P1^Chest CT^LOCAL^CTCHEST^CT chest w/o contrast^LOCAL",
                16: "4321^HOUSE^GREGORY^^^DR", 18: self.accession,
                19: self.requested_procedure_id, 20: sps, 24: self.modality, 27: timing,
                30: "WALK", 34: "5555^TECH^TERRY"}))
            if self.study_uid:
                segs.append(segment("ZDS", {1: f"{self.study_uid}^100^Application^DICOM"}))
        return segs

    def text(self) -> str:
        return "\r".join(self.segments()) + "\r"

    def encode(self, codec: str = "utf-8") -> bytes:
        return self.text().encode(codec)


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment from numbered fields (for MSH, field 2 is the encoding characters)."""
    if name == "MSH":
        fields = {2: "^~\\&", **fields}
        values = [fields.get(i, "") for i in range(2, max(fields) + 1)]
        return "MSH|" + "|".join(values).rstrip("|")
    values = [fields.get(i, "") for i in range(1, max(fields) + 1)]
    return "|".join([name, *values]).rstrip("|")


def order(n: int, **overrides: object) -> OrderSample:
    """The n-th of a series of distinct orders (own patient, accession, UID, SPS)."""
    values: dict[str, object] = {
        "control_id": f"MSG{n:08d}", "patient_id": f"P{n:07d}",
        "patient_name": f"PATIENT^NUMBER{n}", "placer": f"PLC{n:07d}",
        "filler": f"FIL{n:07d}", "accession": f"A{n:07d}",
        "requested_procedure_id": f"RP{n:07d}", "study_uid": f"1.2.826.0.1.3680043.8.498.{n + 1}",
        "sps_ids": [f"SPS{n:07d}"],
    }
    values.update(overrides)
    return OrderSample(**values)  # type: ignore[arg-type]
