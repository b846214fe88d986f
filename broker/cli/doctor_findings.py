"""One line of ``mwl-broker doctor``: OK, WARN or FAIL, the check, what to do."""

from __future__ import annotations

from dataclasses import dataclass

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass(frozen=True)
class Finding:
    status: str
    check: str
    message: str

    def line(self) -> str:
        text = self.message.replace("\n", "\n" + " " * 19)
        return f"{self.status:<5} {self.check:<12} {text}"
