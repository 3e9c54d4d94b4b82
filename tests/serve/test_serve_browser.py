"""The `shirg serve` page in a real headless Chromium (Debian's, driven by playwright): load the page,
pick the bundled example, ask, and check each mode's answer, token count, times and overlay."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
playwright_api = pytest.importorskip("playwright.sync_api")

from shirg import bundled  # noqa: E402
from shirg.serve.app import create_app  # noqa: E402
from shirg.serve.engine import Defaults, Engine  # noqa: E402
from shirg.serve.live import LiveServer  # noqa: E402

CHROMIUM = os.environ.get("SHIRG_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MODES = ["lowres", "full", "shirg"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "runs" / "test-artifacts"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() and shutil.which("chromium") is None,
                                reason="Debian's chromium is not installed (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def engine():
    return Engine.load(bundled.model_dir(), str(bundled.adapter_dir()), MODES,
                       defaults=Defaults(gen_length=20, steps=10, block_length=20))


@pytest.fixture(scope="module")
def browser():
    exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=ARGS)
        yield b
        b.close()


def test_page_answers_the_bundled_example_side_by_side(engine, browser, tmp_path):
    sample = bundled.demo_sample()
    image = bundled.demo_sample().image
    from shirg.vision.preprocess import load_image

    pil = load_image(image)
    # what the library answers for the same input, mode by mode
    expected = {m: engine.run(engine.settings(m), [(pil, sample.question)])[0] for m in MODES}
    assert expected["shirg"].text in sample.answers and expected["full"].text in sample.answers

    app = create_app(engine, example=sample)
    with LiveServer(app) as live:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(live.url + "/")
        assert page.title().startswith("shirg serve")
        checked = page.eval_on_selector_all("input[name=mode]:checked", "els => els.map(e => e.value)")
        assert checked == MODES
        page.click("#use-example")
        page.wait_for_function("document.getElementById('question').value.length > 0", timeout=30_000)
        assert page.input_value("#question") == sample.question
        assert "expected answer: " + " | ".join(sample.answers) in page.inner_text("#expected")
        assert not page.is_visible("#api-key")  # no key asked when the server needs none
        page.click("#ask")
        page.wait_for_selector("body[data-state=answered]", timeout=180_000)
        cards = page.query_selector_all(".result")
        assert [c.get_attribute("data-mode") for c in cards] == MODES
        for card in cards:
            mode = card.get_attribute("data-mode")
            ans = expected[mode]
            assert card.query_selector(".answer").inner_text().strip().startswith(ans.text or "(empty)")
            assert f"{ans.meta['visual_tokens']} visual tokens" in card.query_selector(".tokens").inner_text()
            assert "denoise" in card.query_selector(".times").inner_text()
            overlay = card.query_selector("img.overlay")
            if mode == "lowres":
                assert overlay is None
            else:  # the kept-token overlay drawn and decoded by the browser
                assert overlay.evaluate("img => img.complete && img.naturalWidth > 100")
        ok = page.eval_on_selector_all(".answer.ok", "els => els.length")
        assert ok == sum(expected[m].text in sample.answers for m in MODES)
        shots = [tmp_path / "serve-page-example.png", tmp_path / "serve-page-upload.png"]
        page.screenshot(path=str(shots[0]), full_page=True)

        # K and score are sent with the request: a smaller K keeps fewer tokens
        page.fill("#k", "60")
        page.select_option("#score", "saliency")
        page.evaluate("document.body.dataset.state = ''")
        page.click("#ask")
        page.wait_for_selector("body[data-state=answered]", timeout=180_000)
        shirg_card = page.query_selector(".result[data-mode=shirg]")
        grid = engine.options.grid()
        from shirg.tokens.dual_scale import scaffold_size

        assert f"{scaffold_size(grid) ** 2 + 60} visual tokens" in shirg_card.query_selector(".tokens").inner_text()
        # a bad K is reported on the page, not a crash
        page.fill("#k", "5")
        page.click("#ask")
        page.wait_for_selector("#status.error", timeout=60_000)
        assert "coverage cells" in page.inner_text("#status")
        page.fill("#k", "")
        assert errors == []

        # an uploaded image, asked in the modes ticked (lowres unticked)
        flipped = tmp_path / "flipped.png"
        from PIL import Image

        pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped)

        want = engine.run(engine.settings("shirg"), [(Image.open(flipped).convert("RGB"), sample.question)])[0]
        page.set_input_files("#image-file", str(flipped))
        page.wait_for_function("document.getElementById('preview').src.startsWith('data:image/png')")
        page.uncheck("input[name=mode][value=lowres]")
        page.select_option("#score", "text")
        page.evaluate("document.body.dataset.state = ''")
        page.click("#ask")
        page.wait_for_selector("body[data-state=answered]", timeout=180_000)
        cards = page.query_selector_all(".result")
        assert [c.get_attribute("data-mode") for c in cards] == ["full", "shirg"]
        assert cards[1].query_selector(".answer").inner_text().strip() == (want.text or "(empty)")
        assert page.query_selector_all(".answer.ok") == []  # no expected answer for an upload

        page.screenshot(path=str(shots[1]), full_page=True)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for shot in shots:  # test artifacts (runs/ is not tracked)
            assert shot.stat().st_size > 10_000
            shutil.copyfile(shot, ARTIFACTS / shot.name)
        assert errors == []  # no JavaScript error on the page
        page.close()
