"""Two reviewers confirm a real alert in a real headless Chromium; the confirmed event reaches its topic, the audit has both.

The alert comes from a real pipeline run (every stage its own process, as in
tests/vigil/test_run.py): person-01 enrolled from three photos, a camera showing
two other photos of them. Screenshots of the review page go to out/screenshots/.
"""

from __future__ import annotations

from pathlib import Path

from datetime import timedelta

import pytest

from accountability.actors import Actor
from runtime.kafka import EventReader
from schemas.events import ConfirmedAlertEvent, utc_now
from schemas.topics import CONFIRMED
from synthetic.footage import Scene, make_footage
from tests.console.conftest import PASSWORD
from tests.console.test_api import audit_events

pytestmark = [pytest.mark.services, pytest.mark.models, pytest.mark.slow]

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "out" / "screenshots"
FPS = 6


@pytest.fixture
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/setup.sh installs them as root with apt-get)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


@pytest.fixture
def real_alert(stack, console, people, tmp_path, monkeypatch):
    """The alert a real pipeline run, under its own deployment as `vigil run` makes one, raises for person-01 on camera lobby."""
    from accountability.audit import AuditLog
    from vigil.enroll import Enroller
    from vigil.run import PipelineRun, run_deployment

    settings = stack.settings
    scenes = [Scene(photo, 12, "person-01") for photo in people["person-01"][3:5]]
    make_footage(tmp_path / "lobby.mp4", scenes, fps=FPS, size=(640, 360))
    monkeypatch.setenv("VIGIL_INGEST__TARGET_FPS", str(FPS))
    run = PipelineRun(settings, [f"lobby={tmp_path / 'lobby.mp4'}"], home=stack.home or tmp_path)
    actor = Actor("test-suite", "test", frozenset({"enroller", "authoriser"}))
    with AuditLog(settings) as audit, run_deployment(settings, actor, run, case="console-test", reason="console browser test",
                                                     persons=None, audit=audit) as use:
        enroller = Enroller(settings, audit=audit)
        try:
            result = enroller.enroll("person-01", people["person-01"][:3], actor=actor, reason="console browser test",
                                     expires_at=utc_now() + timedelta(days=1), deployment_id=use.deployment.deployment_id)
            assert result.enrolled, result.refused
        finally:
            enroller.close()
        summary = run.execute()
    alerts = [a for a in summary.alerts if a.person_id == "person-01"]
    assert len(alerts) == 1 and alerts[0].deployment_id == use.deployment.deployment_id, summary.alerts
    return alerts[0]


def test_two_reviewers_confirm_a_real_alert_in_chromium(browser, console, real_alert):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    row = f'tr[data-alert-id="{real_alert.alert_id}"]'

    def log_in(name: str) -> None:
        browser.get(console.url)
        wait.until(seen.visibility_of_element_located((By.ID, "login-name"))).send_keys(name)
        browser.find_element(By.ID, "login-password").send_keys(PASSWORD)
        browser.find_element(By.ID, "login-submit").click()
        wait.until(seen.text_to_be_present_in_element((By.ID, "who-name"), name))

    def open_alert() -> None:
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row) or d.find_element(By.ID, "alerts-refresh").click())
        browser.find_element(By.CSS_SELECTOR, row).click()
        wait.until(seen.text_to_be_present_in_element((By.ID, "alert-title"), "person-01 on lobby"))
        for image in ("img-crop", "img-snapshot"):  # served (and audited) only to a reviewer: loaded means allowed
            wait.until(lambda d: d.execute_script("const i = document.getElementById(arguments[0]); "
                                                  "return i.complete && i.naturalWidth > 0", image))
        wait.until(lambda d: d.execute_script("return [...document.querySelectorAll('img.enrolled')]"
                                              ".some(i => i.complete && i.naturalWidth > 0)"))

    def screenshot(name: str) -> None:
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(SCREENSHOTS / name))

    log_in("reviewer-a")
    open_alert()
    screenshot("review-reviewer-a.png")
    browser.find_element(By.ID, "confirm").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "decision-status"), "a second reviewer must confirm"))
    assert not browser.find_element(By.ID, "confirm").is_enabled()  # the page offers no second confirmation
    browser.find_element(By.ID, "logout").click()
    wait.until(seen.visibility_of_element_located((By.ID, "login-name")))

    log_in("reviewer-b")
    open_alert()
    assert "reviewer-a" in browser.find_element(By.ID, "alert-facts").text
    screenshot("review-reviewer-b.png")
    browser.find_element(By.ID, "confirm").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "decision-status"), "Confirmed by reviewer-a and reviewer-b"))
    screenshot("review-confirmed.png")

    with EventReader(console.settings.kafka, CONFIRMED) as reader:
        confirmed = [r.event for r in reader.follow(idle_timeout_s=2)
                     if isinstance(r.event, ConfirmedAlertEvent) and r.event.alert.alert_id == real_alert.alert_id]
    assert len(confirmed) == 1 and confirmed[0].confirmed_by == ["reviewer-a", "reviewer-b"]
    assert confirmed[0].alert == real_alert
    reviews = audit_events(console.settings, action="review", alert_id=real_alert.alert_id)
    assert [(e.actor, e.details["decision"]) for e in reviews] == [("reviewer-a", "confirm"), ("reviewer-b", "confirm")]
    views = audit_events(console.settings, action="view", alert_id=real_alert.alert_id)
    assert {e.actor for e in views} == {"reviewer-a", "reviewer-b"}
