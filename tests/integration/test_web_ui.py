"""The try-it page in a real headless browser (Debian's chromium, driven by Playwright) against
`dynamics up` with the fixture weights: load the demo media, submit, watch the progress move
live and reach 100 %, then the page's `<video>` loads the real MP4 (metadata and a decoded
frame), its download link serves the same file, and the per-stage timings are listed.

Screenshots (idle, in progress, done) are written to the test's folder; with
DYNAMICS_UPDATE_SCREENSHOTS=1 they are copied to docs/img/ (the README shows them).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from services.cli.local_stack import free_port
from tests.integration.up_process import running_up

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.ffmpeg,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg"),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium "
        "(`apt-get install chromium`; setup.sh installs it)",
    ),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """`dynamics up` on a free port with the fixture weights; yields its base URL."""
    tmp = tmp_path_factory.mktemp("web-ui")
    with running_up(tmp, free_port(), "--workers", "1") as base:
        yield base


@pytest.fixture()
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 900, "height": 1100})
            yield context.new_page()
        finally:
            browser.close()


def _shot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"web-ui-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("DYNAMICS_UPDATE_SCREENSHOTS") == "1":
        (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, ROOT / "docs" / "img" / path.name)


def test_the_page_runs_a_job_and_plays_the_result(stack: str, page, tmp_path: Path) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{stack}/")
    assert page.title() == "Dynamics: try it"
    assert page.locator("#submit").is_disabled()  # nothing picked yet

    page.click("#demo")
    page.wait_for_function("() => !document.getElementById('submit').disabled")
    page.wait_for_function(
        "() => { const v = document.getElementById('driving-preview');"
        " return v.readyState >= 2 && v.videoWidth > 0; }"
    )
    page.fill("#seconds", "1")
    _shot(page, tmp_path, "idle")

    # Every percentage the page shows, recorded in the page as it changes.
    page.evaluate("""() => {
        window.seenPercents = [];
        const el = document.getElementById('percent');
        new MutationObserver(() => window.seenPercents.push(Number(el.dataset.value)))
            .observe(el, {attributes: true, childList: true, subtree: true});
    }""")
    page.click("#submit")
    page.wait_for_function(
        "() => { const p = Number(document.getElementById('percent').dataset.value);"
        " return p > 0 && p < 100; }",
        timeout=240_000,
    )
    _shot(page, tmp_path, "progress")
    page.wait_for_function(
        "() => ['succeeded', 'failed', 'cancelled'].includes("
        "document.getElementById('status').textContent)",
        timeout=300_000,
    )
    status = page.text_content("#status")
    assert status == "succeeded", (
        status,
        page.text_content("#error"),
        page.text_content("#message"),
    )
    assert page.text_content("#percent") == "100 %"
    seen = page.evaluate("window.seenPercents")
    assert any(0 < p < 100 for p in seen) and seen[-1] == 100, seen

    # The <video> loads the real result: metadata (about 1 s long) and a decoded frame.
    page.wait_for_function(
        "() => { const v = document.getElementById('result-video');"
        " return v.readyState >= 2 && v.videoWidth > 0; }",
        timeout=60_000,
    )
    video = page.evaluate("""() => { const v = document.getElementById('result-video');
        return {duration: v.duration, width: v.videoWidth, height: v.videoHeight,
                error: v.error && v.error.code, src: v.currentSrc}; }""")
    assert video["error"] is None and 0.8 <= video["duration"] <= 1.5, video
    assert video["width"] > 0 and video["height"] > 0, video
    page.evaluate("document.getElementById('result-video').pause()")

    stages = page.locator("#timings tbody td:first-child").all_text_contents()
    assert {"fetch_trim", "detect", "animate", "encode", "upload"} <= set(stages), stages
    job_id = page.text_content("#job-id")
    href = page.get_attribute("#download", "href")
    assert href and href.startswith(f"/v1/jobs/{job_id}/result?"), href
    mp4 = httpx.get(f"{stack}{href}", timeout=30)
    assert mp4.status_code == 200 and mp4.content[4:8] == b"ftyp", mp4.status_code
    job = httpx.get(f"{stack}/v1/jobs/{job_id}", timeout=10).json()
    assert page.is_hidden("#noise") is not bool(job["random_weights"]), job["random_weights"]
    assert not errors, errors
    _shot(page, tmp_path, "done")


def test_the_page_shows_the_gateways_error_code(stack: str, page, tmp_path: Path) -> None:
    """A photo that is not an image is refused by the gateway before any job exists; the page
    shows the stable code from the error body."""
    bad = tmp_path / "not-a-photo.png"
    bad.write_bytes(b"this is text, not an image")
    page.goto(f"{stack}/")
    page.click("#demo")
    page.wait_for_function("() => !document.getElementById('submit').disabled")
    page.set_input_files("#source", str(bad))
    page.click("#submit")
    page.wait_for_function("() => document.getElementById('message').classList.contains('error')")
    message = page.text_content("#message")
    assert message.startswith("bad_image: "), message
    assert page.is_hidden("#job")


def test_the_page_is_off_unless_asked(tmp_path: Path) -> None:
    """Without GATEWAY_WEB_UI the gateway serves no page; `dynamics up` asks for it."""
    from services.cli.up import build_parser, gateway_environ
    from services.gateway.config import GatewayConfig

    assert GatewayConfig.from_env({"GATEWAY_AUTH_MODE": "none"}).web_ui is False
    targets = type("T", (), {"face_detect": "a:1", "animator": "b:2", "encoder": "c:3"})()
    args = build_parser().parse_args(["--data-dir", str(tmp_path)])
    assert GatewayConfig.from_env(gateway_environ({}, args, targets)).web_ui is True
