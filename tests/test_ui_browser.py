"""The lineage and discovery, as a person sees them: ``dagster-webserver`` serves this
repository's workspace and a headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright; no browser is ever downloaded) checks, by what is visible on the page, that

* the global asset lineage shows every group (cdc, change_logs, features, online, services)
  and, with the groups expanded, ``customer_orders`` and its downstream ``churn_model``;
* the catalog lists ``features/customer_orders``, and its asset page shows the owner
  ``team:growth`` (the UI renders a team owner as its name, ``growth``), the column schema with
  ``total_spend_30d``, and the downstream ``services/churn_model`` in its lineage tab.

Screenshots land in test-artifacts/ (git-ignored). Nothing is materialized.
"""

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api")

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
WAIT_MS = 30_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_webserver(port: int, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"dagster-webserver exited ({process.returncode}):\n" + log.read_text()[-4000:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"dagster-webserver did not answer within {timeout:.0f}s:\n" + log.read_text()[-4000:])


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


def dismiss_onboarding(page, timeout: int = 3_000) -> None:
    """A fresh instance greets (a few seconds in) with a "Join the Dagster community" dialog;
    skip it if shown. The webserver then remembers it."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=timeout)
    except sync_api.TimeoutError:
        return
    skip.click()
    skip.wait_for(state="hidden", timeout=WAIT_MS)


def expand_all_groups(page) -> None:
    """The graph's settings button (bottom right, the "settings" icon) has "Expand all groups"."""
    page.locator("button:has([role=img][aria-label=settings])").last.click()
    page.get_by_text("Expand all groups").locator("visible=true").first.click()
    page.keyboard.press("Escape")


@pytest.mark.timeout(300)
def test_lineage_and_discovery_in_the_dagster_ui(tmp_path):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test does it as root)")
    webserver = shutil.which("dagster-webserver", path=str(Path(os.sys.executable).parent)) or "dagster-webserver"
    ARTIFACTS.mkdir(exist_ok=True)
    home, data, log = tmp_path / "dagster_home", tmp_path / "data", tmp_path / "webserver.log"
    home.mkdir()
    data.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("FP_", "DAGSTER_"))}
    environment.update(DAGSTER_HOME=str(home), DAGSTER_DISABLE_TELEMETRY="yes", FP_DATA_DIR=str(data),
                       FP_PARTITIONS_START=today.isoformat(), FP_PROJECT="uitest")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as output:
        server = subprocess.Popen([webserver, "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                                  cwd=REPO, env=environment, stdout=output, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    playwright = browser = None
    try:
        wait_for_webserver(port, server, log)
        playwright = sync_api.sync_playwright().start()
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1800, "height": 1000})
        page.set_default_timeout(WAIT_MS)
        expect = sync_api.expect

        # (a) The global asset lineage: every group, then every asset with the groups expanded.
        page.goto(f"{base}/asset-groups")
        dismiss_onboarding(page, timeout=20_000)
        expect(page.get_by_text("Global asset lineage")).to_be_visible(timeout=WAIT_MS)
        for group in ("cdc", "change_logs", "features", "online", "services"):
            expect(page.get_by_text(group, exact=True).first).to_be_visible(timeout=WAIT_MS)
        expand_all_groups(page)
        expect(page.get_by_text("churn_model", exact=True).first).to_be_visible(timeout=WAIT_MS)
        expect(page.get_by_text("customer_orders", exact=True).first).to_be_visible(timeout=WAIT_MS)
        page.wait_for_timeout(1_500)  # let the graph settle before the picture
        page.screenshot(path=str(ARTIFACTS / "ui-global-lineage.png"))

        # (b) Discovery: the catalog lists the feature view.
        page.goto(f"{base}/assets")
        dismiss_onboarding(page)
        expect(page.get_by_text("features / customer_orders").first).to_be_visible(timeout=WAIT_MS)
        expect(page.get_by_text("services / churn_model").first).to_be_visible(timeout=WAIT_MS)
        page.screenshot(path=str(ARTIFACTS / "ui-catalog.png"))

        # The asset page: owner, column schema, lineage summary.
        page.goto(f"{base}/assets/features/customer_orders")
        dismiss_onboarding(page)
        expect(page.get_by_text("Column name", exact=True)).to_be_visible(timeout=WAIT_MS)
        expect(page.get_by_text("total_spend_30d", exact=True).first).to_be_visible(timeout=WAIT_MS)
        owners = page.get_by_text("Owners", exact=True)
        expect(owners).to_be_visible(timeout=WAIT_MS)
        owners_section = owners.locator("xpath=..")
        expect(owners_section).to_contain_text("growth", timeout=WAIT_MS)
        expect(owners_section.locator("[role=img][aria-label=people]")).to_be_visible()  # a team, not a user
        expect(owners_section).not_to_contain_text("catalog")
        expect(page.get_by_text("Downstream assets", exact=True)).to_be_visible(timeout=WAIT_MS)
        expect(page.get_by_text("online / customer_orders").first).to_be_visible(timeout=WAIT_MS)
        page.screenshot(path=str(ARTIFACTS / "ui-asset-customer_orders.png"), full_page=True)

        # Its lineage tab, everything downstream: online/customer_orders, then services/churn_model.
        page.goto(f"{base}/assets/features/customer_orders?view=lineage&lineageScope=downstream&lineageDepth=5")
        dismiss_onboarding(page)
        for text in ("churn_model", "services", "online", "customer_orders"):
            expect(page.get_by_text(text, exact=True).first).to_be_visible(timeout=WAIT_MS)
        page.wait_for_timeout(1_000)
        page.screenshot(path=str(ARTIFACTS / "ui-lineage-customer_orders.png"))
    finally:
        if browser is not None:
            browser.close()
        if playwright is not None:
            playwright.stop()
        stop(server)
