"""The web console in headless Chromium (Selenium, Debian's chromium + chromium-driver) against
the real ``mwl-broker serve`` process: an order appears on the worklist, its history opens, a
status message the RIS refused is retried from the outbox page and gets delivered."""

from __future__ import annotations

import asyncio
import datetime
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from tests.support.broker import BrokerProcess, mappings_with_orc18_station, wait_for_port
from tests.support.mllp import msa, send
from tests.support.mpps import mpps
from tests.support.ris import Ris
from tests.support.samples import order

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def today() -> str:
    """Today's date as the broker sees it now (not at import: a run may cross midnight)."""
    return datetime.date.today().strftime("%Y%m%d")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class RisThread:
    """The RIS listener (tests/integration/ris.py) on an event loop of its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ris", daemon=True)

    def __enter__(self) -> Ris:
        self.thread.start()
        self.ris = asyncio.run_coroutine_threadsafe(Ris().start(), self.loop).result(10)
        return self.ris

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.ris.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: the console's browser test needs the "
                    "Debian packages chromium and chromium-driver (bash "
                    "scripts/install-system-deps.sh, which `make test` runs)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def start_exam(dicom_port: int) -> None:
    """A modality starts order(1)'s step: MPPS N-CREATE IN PROGRESS."""
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", dicom_port, ae_title="MWLBROKER")
    assert assoc.is_established
    try:
        assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        status, _ = assoc.send_n_create(mpps(), ModalityPerformedProcedureStep,
                                        "1.2.826.0.1.3680043.8.498.9001")
        assert status.Status == 0
    finally:
        assoc.release()


def reload_until(driver: WebDriver, found: Callable[[], WebElement | None],
                 seconds: float = 15.0) -> WebElement:
    """Reload the page until ``found`` finds its element (bounded in time)."""
    deadline = time.monotonic() + seconds
    while True:
        element = found()
        if element is not None:
            return element
        assert time.monotonic() < deadline, f"not shown on {driver.current_url} in time"
        time.sleep(0.2)
        driver.refresh()


def outbox_row(driver: WebDriver, state: str) -> WebElement | None:
    rows = driver.find_elements(By.CSS_SELECTOR, "table.outbox tbody tr")
    return next((r for r in rows if r.find_elements(By.CSS_SELECTOR, f"span.status.{state}")),
                None)


def test_order_history_and_dead_letter_retry_in_the_console(tmp_path: Path,
                                                             browser: WebDriver) -> None:
    mappings = mappings_with_orc18_station(tmp_path)
    with RisThread() as ris:
        ris.mode = "AE"
        destination = (f"outbound.destinations=[{{name: ris, host: 127.0.0.1, "
                       f"port: {ris.port}, timeout: 2}}]")
        proc = BrokerProcess(tmp_path, (destination, f"mappings.directory={mappings}",
                                        "outbound.backoff_base=0.1", "outbound.poll=0.1"))
        proc.start()
        try:
            wait_for_port(proc.admin_port, proc=proc.proc)
            base = f"http://127.0.0.1:{proc.admin_port}"
            acks = asyncio.run(send(proc.port, order(1, start=f"{today()}0930",
                                                     station="CT01").encode()))
            assert msa(acks[0])[1] == "AA"

            browser.get(base + "/")
            assert browser.title.startswith("Worklist of ")
            station = browser.find_element(By.CSS_SELECTOR, 'h2[data-station="CT01"]')
            assert "CT01" in station.text
            row = browser.find_element(By.XPATH, "//table[contains(@class,'worklist')]"
                                                 "//tr[td[text()='A0000001']]")
            assert "PATIENT^NUMBER1" in row.text and "09:30" in row.text
            assert row.find_element(By.CSS_SELECTOR, "span.status").text == "SCHEDULED"

            row.find_element(By.LINK_TEXT, "history").click()
            WebDriverWait(browser, 15).until(lambda d: "/procedures/" in d.current_url)
            assert browser.title.startswith("Procedure 1.2.826.0.1.3680043.8.498.2")
            page = browser.find_element(By.TAG_NAME, "main").text
            assert "MSG00000001" in page and "SPS0000001" in page and "no MPPS yet" in page

            start_exam(proc.dicom_port)  # → a status message the RIS refuses: a dead letter
            browser.get(base + "/outbox")
            dead = reload_until(browser, lambda: outbox_row(browser, "dead"))
            assert "answered AE" in dead.text and "order unknown here" in dead.text

            ris.mode = "AA"
            dead.find_element(By.XPATH, ".//button[text()='Retry']").click()
            WebDriverWait(browser, 15).until(lambda d: "notice=" in d.current_url)
            notice = browser.find_element(By.CSS_SELECTOR, "p.notice")
            assert "queued again" in notice.text
            delivered = reload_until(browser, lambda: outbox_row(browser, "delivered"))
            assert outbox_row(browser, "dead") is None
            assert "ORM^O01" in delivered.text

            delivered.find_element(By.LINK_TEXT, "1.2.826.0.1.3680043.8.498.2").click()
            WebDriverWait(browser, 15).until(lambda d: "/procedures/" in d.current_url)
            page = browser.find_element(By.TAG_NAME, "main").text
            assert "IN PROGRESS" in page and "STARTED" in page and "delivered" in page
            shot = tmp_path / "console.png"
            assert browser.save_screenshot(str(shot))
        finally:
            proc.stop()
        assert len(ris.received) == 2  # refused once, delivered after the retry
    assert shot.read_bytes()[:8] == PNG_SIGNATURE
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "console.png")
    assert (ARTIFACTS / "console.png").read_bytes()[:8] == PNG_SIGNATURE


EXPLAIN_QUERY = """(0008,0050) SH []
(0010,0010) PN []
(0010,0020) LO []
(0040,0100) SQ
  (fffe,e000) na
    (0008,0060) CS [CT]
    (0040,0001) AE [CT01]
    (0040,0002) DA [{date}]
    (0040,0009) SH []
  (fffe,e00d) na
(fffe,e0dd) na
"""


def test_explain_and_timeline_in_the_console(tmp_path: Path, browser: WebDriver) -> None:
    """findscu asks as CT01; the console says why an order on CT02 and a cancelled one are
    not on its worklist, and shows an order's timeline (screenshots in tests/e2e/artifacts)."""
    from tests.support.dicom_peers import dump_to_dicom, findscu

    mappings = mappings_with_orc18_station(tmp_path)
    proc = BrokerProcess(tmp_path, (f"mappings.directory={mappings}",))
    proc.start()
    shots = []
    try:
        wait_for_port(proc.admin_port, proc=proc.proc)
        base = f"http://127.0.0.1:{proc.admin_port}"
        orders = [order(1, start=f"{today()}0930", station="CT01"),
                  order(2, start=f"{today()}1000", station="CT02"),
                  order(3, start=f"{today()}1030", station="CT01"),
                  order(3, control_id="CA3", order_control="CA", order_status="CA",
                        start=f"{today()}1030", station="CT01")]
        acks = asyncio.run(send(proc.port, *(o.encode() for o in orders)))
        assert [msa(a)[1] for a in acks] == ["AA"] * 4
        start_exam(proc.dicom_port)  # order(1): MPPS IN PROGRESS
        query = dump_to_dicom("", tmp_path / "q.dcm", EXPLAIN_QUERY.format(date=today()))
        findscu(proc.dicom_port, "MWLBROKER", query, tmp_path / "rsp", calling="CT01")

        browser.get(base + "/queries?station=CT01")
        reload_until(browser, lambda: next(iter(browser.find_elements(
            By.CSS_SELECTOR, "table.queries tbody tr td a")), None))
        browser.get(base + "/procedures/A0000002/explain?station=CT01")
        verdict = browser.find_element(By.CSS_SELECTOR, "table.explain span.verdict")
        assert verdict.text == "not returned"
        page = browser.find_element(By.TAG_NAME, "main").text
        assert "scheduled on station CT02, the query asked for CT01" in page
        shots.append(("explain.png", browser.get_screenshot_as_png()))
        browser.get(base + "/procedures/A0000003/explain?station=CT01")
        assert "the order was cancelled" in browser.find_element(By.TAG_NAME, "main").text

        browser.get(base + "/procedures/A0000001")
        browser.find_element(By.LINK_TEXT, "Timeline").click()
        WebDriverWait(browser, 15).until(lambda d: d.current_url.endswith("/timeline"))
        rows = browser.find_elements(By.CSS_SELECTOR, "table.timeline tbody tr")
        kinds = [r.find_element(By.CSS_SELECTOR, "span.kind").text for r in rows]
        assert kinds[0] == "HL7 in" and "Step" in kinds and "MPPS" in kinds
        shots.append(("timeline.png", browser.get_screenshot_as_png()))
    finally:
        proc.stop()
    ARTIFACTS.mkdir(exist_ok=True)
    for name, png in shots:
        assert png[:8] == PNG_SIGNATURE
        (ARTIFACTS / name).write_bytes(png)
