"""``mwl-broker init DIR``: an editable copy of the shipped mappings, settings and samples."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from broker import __version__
from broker.config import shipped_defaults

#: settings left active in the site's broker.yaml, by section: key → file inside the site
ACTIVE = {"database": ("path", "var/broker.sqlite"), "mappings": ("directory", "mappings")}
_SECTION = re.compile(r"^([a-z_]+):")


class InitError(Exception):
    """The site cannot be written; the message says why."""


class SiteExists(InitError):
    """Files of the site are already there and --force was not given."""

    def __init__(self, existing: list[Path]) -> None:
        super().__init__("already there (use --force to overwrite): "
                         + ", ".join(map(str, existing)))
        self.existing = existing


@dataclass(frozen=True)
class Written:
    """What ``init`` wrote: the settings file, then the other files."""

    settings: Path
    files: list[Path]


def site_settings(example: str, site: Path) -> str:
    """The example settings with every line commented out but the paths into ``site``.

    A commented setting is the example's line behind one leading ``#``: removing it (and the
    one of its section's line) gives that default back.
    """
    lines = example.splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    out = [
        f"# mwl-broker settings of the site in {site}, written by `mwl-broker init`"
        f" (mwl-broker {__version__}).",
        "# Active: the database file and the mapping folder of this site. Every other setting",
        "# is its embedded default behind one '#' at the start of the line: remove that '#'",
        "# (and the one of the section's line) to change it.",
        f"# Run: mwl-broker serve -c {site / 'broker.yaml'}",
    ]
    section = ""
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            out.append(line)
            continue
        head = _SECTION.match(line)
        if head:
            section = head.group(1)
            out.append(line if section in ACTIVE else "#" + line)
            continue
        key, relative = ACTIVE.get(section, ("", ""))
        if key and re.match(rf"^\s+{key}:", line):
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}{key}: {json.dumps(str(site / relative))}")
        else:
            out.append("#" + line)
    return "\n".join(out) + "\n"


def _sources(defaults: Path) -> list[tuple[Path, str]]:
    """(shipped file, path inside the site) of every file ``init`` copies."""
    files = [(p, f"mappings/{p.name}") for p in sorted((defaults / "mappings").glob("*.yaml"))]
    files += [(p, f"samples/{p.name}") for p in sorted((defaults / "samples").glob("*.hl7"))]
    return files


def init_site(directory: Path | str, *, force: bool = False,
              defaults: Path | None = None) -> Written:
    """Write the site's settings, mappings and samples; nothing when a file exists and not force."""
    site = Path(directory).resolve()
    defaults = defaults or shipped_defaults()
    copies = [(source, site / relative) for source, relative in _sources(defaults)]
    if not any(target.parent.name == "mappings" for _, target in copies):
        raise InitError(f"no mapping files in {defaults / 'mappings'}: the installation is "
                        "incomplete (reinstall mwl-broker)")
    settings = site / "broker.yaml"
    existing = [target for target in [settings, *(t for _, t in copies)] if target.exists()]
    if existing and not force:
        raise SiteExists(existing)
    text = site_settings((defaults / "broker.yaml").read_text(encoding="utf-8"), site)
    for _, target in copies:
        target.parent.mkdir(parents=True, exist_ok=True)
    for source, target in copies:
        shutil.copyfile(source, target)
    settings.write_text(text, encoding="utf-8")
    return Written(settings, [target for _, target in copies])
