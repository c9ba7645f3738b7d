"""A screenshot of the server's page answering a sentence, for the docs.

    python -m emotion_lab.tools.page_screenshot MODEL [--text "this is terrifying"] [--out docs/images/page.png]

Serves MODEL on a free loopback port, opens the page in Debian's chromium (through Playwright, the
`browser` extra; `make browser` installs chromium), types the text, waits for its explanation and saves
a PNG of the page. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from emotion_lab.errors import UserInputError
from emotion_lab.inference.batching import Limits
from emotion_lab.inference.explain_worker import ExplainWorker
from emotion_lab.inference.options import add_model_options, load_model
from emotion_lab.inference.server import create_app
from emotion_lab.tools.load_test import free_port, wait_for_explanations, wait_for_server

# Playwright's own browser download is not used: Debian's chromium, kept off every network.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextlib.contextmanager
def chromium(**options) -> Iterator:
    """A Playwright browser context over Debian's chromium with a fresh profile (`options`: for the context)."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        raise UserInputError("Debian's chromium is not installed: run `make browser`")
    with tempfile.TemporaryDirectory(prefix="chromium_profile_") as profile, sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            profile, executable_path=executable, args=CHROMIUM_FLAGS, headless=True, **options
        )
        try:
            yield context
        finally:
            context.close()


@contextlib.contextmanager
def serving(app, seconds: float = 60.0) -> Iterator[str]:
    """`app` served by uvicorn on a free loopback port in a thread; yields its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_for_server(url, seconds=seconds)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emotion_lab.tools.page_screenshot", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("model", type=Path, help="a saved model folder")
    add_model_options(parser)
    parser.add_argument("--text", default="this is terrifying", help="the sentence typed into the page")
    parser.add_argument("--width", type=int, default=900, help="viewport width in pixels")
    parser.add_argument("--out", type=Path, default=Path("docs/images/page.png"))
    args = parser.parse_args(argv)
    try:
        predictor = load_model(args)
        card = args.model / "README.md"
        limits = Limits()
        app = create_app(
            predictor,
            limits,
            card=card.read_text() if card.is_file() else "",
            explainer=ExplainWorker(args.model, limits, args.trust_module, spelling=args.spelling),
        )
        with serving(app) as url, chromium(viewport={"width": args.width, "height": 900}) as browser:
            wait_for_explanations(url)
            page = browser.new_page()
            page.goto(url)
            page.fill("#text", args.text)
            page.locator("#explanation").filter(has_text=args.text).wait_for(timeout=60_000)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
