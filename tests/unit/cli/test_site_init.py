"""``mwl-broker init``: the site copy of the shipped settings, mappings and samples."""

from __future__ import annotations

import dataclasses
import filecmp
import shutil
from pathlib import Path

import pytest
import yaml

from broker.cli.commands import main
from broker.cli.site_init import InitError, SiteExists, init_site, site_settings
from broker.config import PACKAGE_ROOT, Settings, shipped_defaults
from broker.config.loading import load_settings
from broker.mapping.schema import load_mappings


def expected(site: Path) -> Settings:
    """The embedded defaults with the two paths into the site."""
    defaults = Settings()
    return dataclasses.replace(
        defaults,
        database=dataclasses.replace(defaults.database, path=str(site / "var/broker.sqlite")),
        mappings=dataclasses.replace(defaults.mappings, directory=str(site / "mappings")))


def test_shipped_defaults_are_the_repository_files() -> None:
    shipped = shipped_defaults()
    assert (shipped / "mappings").resolve() == (PACKAGE_ROOT / "mappings").resolve()
    assert (shipped / "broker.yaml").resolve() == (PACKAGE_ROOT / "conf/broker.yaml").resolve()
    assert Path(Settings().mappings.directory) == PACKAGE_ROOT / "mappings"


def test_init_writes_a_site_that_loads_with_the_defaults(tmp_path: Path) -> None:
    site = tmp_path / "site"
    written = init_site(site)
    assert written.settings == site / "broker.yaml"
    assert load_settings(written.settings) == expected(site)
    names = sorted(p.name for p in (shipped_defaults() / "mappings").glob("*.yaml"))
    assert sorted(p.name for p in (site / "mappings").iterdir()) == names
    for name in names:
        assert filecmp.cmp(site / "mappings" / name, shipped_defaults() / "mappings" / name,
                           shallow=False)
    assert load_mappings(site / "mappings").for_type("ORM^O01") is not None
    assert {p.name for p in (site / "samples").iterdir()} >= {"omi-o23-ct01.hl7"}
    assert set(written.files) == {*(site / "mappings").iterdir(), *(site / "samples").iterdir()}


def test_commented_settings_are_the_embedded_defaults(tmp_path: Path) -> None:
    """Each line is the example's, commented out by one '#', or one of the two site paths;
    removing every such '#' gives back settings equal to the embedded defaults."""
    example = (shipped_defaults() / "broker.yaml").read_text().splitlines()
    while example[0].startswith("#"):
        example.pop(0)
    text = site_settings("\n".join(example), tmp_path).splitlines()
    body = text[len(text) - len(example):]
    assert all(line.startswith("# ") for line in text[: len(text) - len(example)])
    restored, commented, changed = [], 0, []
    for ours, theirs in zip(body, example, strict=True):
        if ours == "#" + theirs:
            commented += 1
        elif ours != theirs:
            changed.append(ours.strip())
        restored.append(theirs if ours == "#" + theirs else ours)
    assert commented > 50
    assert changed == [f'path: "{tmp_path}/var/broker.sqlite"',
                       f'directory: "{tmp_path}/mappings"']
    target = tmp_path / "all.yaml"
    target.write_text("\n".join(restored))
    assert load_settings(target) == expected(tmp_path)
    assert set(yaml.safe_load(target.read_text())) == {
        f.name for f in dataclasses.fields(Settings)}


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    site = tmp_path / "site"
    init_site(site)
    edited = site / "mappings" / "orders.yaml"
    edited.write_text("# the site's own\n")
    with pytest.raises(SiteExists) as refused:
        init_site(site)
    assert edited in refused.value.existing
    assert "--force" in str(refused.value)
    assert edited.read_text() == "# the site's own\n"
    init_site(site, force=True)
    assert edited.read_text() != "# the site's own\n"


def test_init_refuses_when_one_file_exists_and_writes_nothing(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "broker.yaml").write_text("mllp: {port: 2580}\n")
    with pytest.raises(SiteExists):
        init_site(site)
    assert sorted(p.name for p in site.iterdir()) == ["broker.yaml"]


def test_init_without_shipped_mappings_says_the_installation_is_incomplete(
        tmp_path: Path) -> None:
    broken = tmp_path / "defaults"
    broken.mkdir()
    shutil.copyfile(shipped_defaults() / "broker.yaml", broken / "broker.yaml")
    with pytest.raises(InitError, match="incomplete"):
        init_site(tmp_path / "site", defaults=broken)
    assert not (tmp_path / "site").exists()


def test_init_command_prints_what_it_wrote_and_the_next_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "site"
    assert main(["init", str(site)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {site / 'broker.yaml'}" in out
    assert f"wrote {site / 'mappings' / 'orders.yaml'}" in out
    assert f"mwl-broker serve -c {site / 'broker.yaml'}" in out
    assert main(["init", str(site)]) == 1
    assert "already there" in capsys.readouterr().err
    assert main(["check-mappings", "-c", str(site / "broker.yaml")]) == 0
