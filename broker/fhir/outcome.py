"""FHIR answers that say what is wrong: OperationOutcome issues with a FHIRPath expression
naming the element, and the HTTP status each kind of fault gets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: HTTP statuses of the faults (docs/fhir.md, "Errors")
INVALID, NOT_FOUND, CONFLICT, GONE, PRECONDITION, TOO_LARGE = 400, 404, 409, 410, 412, 413
UNSUPPORTED_MEDIA, BUSINESS_RULE = 415, 422


@dataclass(frozen=True, slots=True)
class Issue:
    code: str  # invalid, structure, required, value, not-found, business-rule …
    diagnostics: str
    expression: str = ""
    severity: str = "error"

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code,
                               "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = [self.expression]
        return out


class FhirError(Exception):
    """A request refused with ``status`` and the issues of its OperationOutcome."""

    def __init__(self, status: int, issues: list[Issue]) -> None:
        super().__init__("; ".join(i.diagnostics for i in issues))
        self.status = status
        self.issues = issues

    @classmethod
    def one(cls, status: int, code: str, diagnostics: str, expression: str = ""
            ) -> FhirError:
        return cls(status, [Issue(code, diagnostics, expression)])

    def at(self, prefix: str) -> FhirError:
        """The same fault with each expression moved under ``prefix`` (a Bundle entry):
        ``ServiceRequest.subject`` → ``Bundle.entry[1].resource.subject``."""
        moved = []
        for issue in self.issues:
            head, dot, rest = issue.expression.partition(".")
            if head.startswith("Bundle"):  # already named from the Bundle
                moved.append(issue)
                continue
            where = f"{prefix}.{rest}" if dot and head[:1].isupper() else (
                prefix if issue.expression == head and head[:1].isupper() else
                issue.expression)
            moved.append(Issue(issue.code, issue.diagnostics, where or prefix, issue.severity))
        return FhirError(self.status, moved)


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.json() for i in issues]}


def information(text: str) -> dict[str, Any]:
    return operation_outcome([Issue("informational", text, severity="information")])
