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


@dataclass
class FhirSettings:
    intake: FhirIntakeSettings = field(default_factory=FhirIntakeSettings)
    destination: FhirDestinationSettings = field(default_factory=FhirDestinationSettings)
