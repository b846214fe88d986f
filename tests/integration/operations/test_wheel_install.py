"""The wheel, installed in a fresh virtualenv, works away from the source tree.

Builds the wheel from a copy of the sources, installs it (dependencies from the package index
pip uses here) into a new virtualenv in tmp, and from other folders runs what the README's
walk runs: check-mappings, init, serve with the site's settings, send a shipped sample,
find it with DCMTK findscu, play the modality simulator and receive the status messages.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.support.broker import ROOT, free_port, wait_for_port

pytestmark = [pytest.mark.wheel, pytest.mark.peers]

#: what the wheel is built from (the wheel holds the broker package only)
SOURCES = ("pyproject.toml", "README.md", "broker")


def dcmtk(program: str) -> str:
    """DCMTK's program, not the one of the same name pynetdicom puts in a virtualenv."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder) / program
        if (Path(folder).parent / "pyvenv.cfg").exists() or not candidate.is_file():
            continue
        return str(candidate)
    raise AssertionError(f"DCMTK {program} is not installed (make system-deps)")


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120
        ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
    return done


def build_and_install(tmp: Path) -> tuple[Path, dict[str, str]]:
    """The fresh virtualenv's bin folder and an environment that knows nothing of the repo."""
    source = tmp / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(ROOT / name, source / name)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "MWL_BROKER_CONFIG")}
    env["PIP_NO_CACHE_DIR"] = "1"
    wheels = tmp / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
         str(source)], tmp, env)
    [wheel] = wheels.glob("mwl_broker-*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "-q", str(wheel)], tmp, env)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    return venv / "bin", env


@pytest.mark.sqlite_only  # the README's walk: make run on the embedded SQLite default
def test_wheel_in_a_fresh_virtualenv_runs_the_readme_walk(tmp_path: Path) -> None:
    bin_, env = build_and_install(tmp_path)
    broker = str(bin_ / "mwl-broker")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    where = run([str(bin_ / "python"), "-c", "import broker, broker.config as c; "
                 "print(broker.__file__); print(c.Settings().mappings.directory)"],
                elsewhere, env).stdout.split()
    site_packages = bin_.parent / "lib"
    assert all(Path(p).is_relative_to(site_packages) for p in where), where
    checked = run([broker, "check-mappings"], elsewhere, env).stdout
    assert checked.startswith("OK:") and "ORM^O01" in checked and "OMI^O23" in checked

    site = tmp_path / "site"
    init = run([broker, "init", str(site)], elsewhere, env).stdout
    assert f"mwl-broker serve -c {site / 'broker.yaml'}" in init
    sample = site / "samples" / "omi-o23-ct01.hl7"
    assert sample.is_file()

    mllp, dicom, admin, ris = free_port(), free_port(), free_port(), free_port()
    receiver = subprocess.Popen([broker, "receive", "-p", str(ris), "-n", "2"], cwd=elsewhere,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [broker, "serve", "-c", str(site / "broker.yaml"), "-o", "mllp.host=127.0.0.1",
         "-o", f"mllp.port={mllp}", "-o", "dicom.host=127.0.0.1", "-o", f"dicom.port={dicom}",
         "-o", f"admin.port={admin}",
         "-o", f"outbound.destinations=[{{name: ris, host: 127.0.0.1, port: {ris}}}]"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(mllp, 30, serve)
        wait_for_port(dicom, 30, serve)
        sent = run([broker, "send", "-q", "-p", str(mllp), str(sample)], elsewhere, env).stdout
        assert ": AA (MSA-2 SAMPLE-OMI-0001)" in sent

        answers = elsewhere / "findscu"
        answers.mkdir()
        run([dcmtk("findscu"), "-W", "-X", "-od", str(answers), "-aec", "MWLBROKER",
             "-k", "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT01",
             "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate",
             "-k", "ScheduledProcedureStepSequence[0].Modality",
             "-k", "PatientName", "-k", "PatientID", "-k", "AccessionNumber",
             "127.0.0.1", str(dicom)], elsewhere, {**env, "TCP_NODELAY": "1"})
        [found] = [dcmread(p) for p in sorted(answers.glob("rsp*.dcm"))]
        assert (found.PatientID, found.AccessionNumber) == ("PAT-1001", "ACC-1001")
        assert str(found.PatientName) == "Müller^Anna^Maria"
        assert found.ScheduledProcedureStepSequence[0].Modality == "CT"

        played = run([broker, "simulate", "modality", "--station", "CT01",
                      "--worklist", f"MWLBROKER@127.0.0.1:{dicom}"], elsewhere, env).stdout
        assert "COMPLETED" in played
        received, _ = receiver.communicate(timeout=60)
        assert receiver.returncode == 0
        orc5 = [line.split("|")[5] for line in received.splitlines()
                if line.startswith("ORC|")]
        assert orc5 == ["IP", "CM"], received
        assert "PLC-1001" in received
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.communicate()
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(20)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
        log.close()
    assert serve.returncode == 0, (tmp_path / "serve.log").read_text()
    assert (site / "var" / "broker.sqlite").is_file()
