"""FHIR R4 settings: orders taken in at ``/fhir`` on the admin HTTP server, and the FHIR
server told of each step's progress (Task, ImagingStudy) through the outbox."""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.config.tls import TlsSettings


@dataclass
class FhirIntakeSettings:
    """``/fhir`` on the admin HTTP server (its authentication rules: a token off loopback)."""

    enabled: bool = True
    #: the largest request body taken (a Bundle of many orders)
    max_body_bytes: int = 4 << 20


@dataclass
class FhirDestinationSettings:
    """The FHIR server that gets a Task per step change and an ImagingStudy on completion.

    Off while ``url`` (the server's base, e.g. https://fhir.example.org/r4) is empty."""

    name: str = "fhir"
    url: str = ""
    timeout: float = 10.0
    #: bearer token (or a file holding it), used when no OAuth2 token URL is set
    token: str = ""
    token_file: str = ""
    #: OAuth2 client credentials grant (RFC 6749 4.4): the token endpoint and the client
    oauth2_token_url: str = ""
    client_id: str = ""
    client_secret: str = ""
    client_secret_file: str = ""
    scope: str = ""
    tls: TlsSettings = field(default_factory=TlsSettings)
    #: also report the orders that did not come in over FHIR (HL7, upstream worklists), by
    #: logical references (accession number, patient ID) instead of ServiceRequest/{id}
    all_orders: bool = False
    #: where the ImagingStudy says the study can be retrieved (contained Endpoints): the
    #: archive's WADO-RS base URL, and the host:port of retrieve AE titles an IAN names
    wado_rs_url: str = ""
    dimse_addresses: dict[str, str] = field(default_factory=dict)


@dataclass
class FhirSettings:
    intake: FhirIntakeSettings = field(default_factory=FhirIntakeSettings)
    destination: FhirDestinationSettings = field(default_factory=FhirDestinationSettings)


def check_destination(d: FhirDestinationSettings, lanes: list[str], where: str) -> list[str]:
    """Problems of the FHIR destination's settings (none while it is off); ``lanes``: the
    other outbox destinations' names."""
    if not d.url:
        return []
    problems = []
    if not d.url.startswith(("http://", "https://")):
        problems.append(f"{where}: fhir.destination.url {d.url!r} must start with http:// or "
                        "https://")
    if not d.name.strip():
        problems.append(f"{where}: fhir.destination.name must not be empty")
    elif d.name in lanes:
        problems.append(f"{where}: fhir.destination.name {d.name!r} is also the name of "
                        "another destination (outbound.destinations, dicom.mpps_forward, "
                        "storage_commitment.name, UPS subscribers)")
    if d.wado_rs_url and not d.wado_rs_url.startswith(("http://", "https://")):
        problems.append(f"{where}: fhir.destination.wado_rs_url {d.wado_rs_url!r} must start "
                        "with http:// or https://")
    for ae, address in d.dimse_addresses.items():
        problems += _dimse_address(str(ae), str(address), where)
    if d.timeout <= 0:
        problems.append(f"{where}: fhir.destination.timeout {d.timeout} must be more than 0")
    if d.oauth2_token_url:
        if not d.oauth2_token_url.startswith(("http://", "https://")):
            problems.append(f"{where}: fhir.destination.oauth2_token_url must start with "
                            "http:// or https://")
        if not d.client_id:
            problems.append(f"{where}: fhir.destination.oauth2_token_url needs client_id")
        if not (d.client_secret or d.client_secret_file):
            problems.append(f"{where}: fhir.destination.oauth2_token_url needs client_secret "
                            "or client_secret_file")
        if d.token or d.token_file:
            problems.append(f"{where}: fhir.destination: set either token/token_file or "
                            "oauth2_token_url, not both")
    elif d.token and d.token_file:
        problems.append(f"{where}: fhir.destination: set token or token_file, not both")
    return problems


def _dimse_address(ae: str, address: str, where: str) -> list[str]:
    """Problems of one retrieve AE's ``host:port`` (an AE title: 1 to 16 characters)."""
    host, _, port = address.rpartition(":")
    problems = []
    if not ae.strip() or len(ae) > 16 or "\\" in ae:
        problems.append(f"{where}: fhir.destination.dimse_addresses: {ae!r} is not an AE title")
    if not host or "/" in host or not port.isdigit() or not 0 < int(port) < 65536:
        problems.append(f"{where}: fhir.destination.dimse_addresses.{ae}: {address!r} must be "
                        "host:port")
    return problems
