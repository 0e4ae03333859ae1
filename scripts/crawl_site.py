"""Crawl a built documentation site in headless Chromium: dead links and missing images.

Serves the site folder on 127.0.0.1, opens every page reachable from the home page in headless
Chromium (`--dump-dom`, so the DOM is the one after the page's scripts ran), and checks every
link and image in it: an internal link must reach a page (HTTP 200) and, with a `#fragment`,
an element with that id; an image must load (HTTP 200) and decode (Pillow). External links are
listed, not fetched (the check runs offline). `--screenshots DIR` saves PNGs of some pages.

    mkdocs build --strict && python -m scripts.crawl_site site/ --screenshots shots/

Exits 1 when anything is broken. Needs Chromium (Debian: `apt-get install chromium`).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import io
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

SHOTS = ("", "getting-started/", "methods/", "api/xai_keras.explainers/", "cli/")


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.images, self.ids = [], [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    sys.exit("no Chromium found: apt-get install chromium")


def _browser(*args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    return subprocess.run([chromium(), *flags, *args], capture_output=True, text=True, timeout=120)


def dump_dom(url: str) -> str:
    out = _browser("--virtual-time-budget=3000", "--dump-dom", url)
    if out.returncode != 0 or "<html" not in out.stdout:
        raise RuntimeError(f"Chromium could not open {url}: {out.stderr[-500:]}")
    return out.stdout


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def image_ok(data: bytes, url: str) -> bool:
    if url.endswith(".svg"):
        return b"<svg" in data
    from PIL import Image

    try:
        Image.open(io.BytesIO(data)).verify()
        return True
    except Exception:
        return False


def _link_problems(links: list[tuple[str, str]], seen: set, ids: dict) -> list[str]:
    """Dead links and dead anchors among the internal links found on the pages."""
    problems = []
    for page, url in links:
        target, fragment = urldefrag(url)
        if target in seen and target not in ids:
            problems.append(f"dead link {url} on {page}")
            continue
        if target not in ids:
            status, _ = fetch(target)
            if status != 200:
                problems.append(f"dead link {url} on {page} (HTTP {status})")
                continue
            if not fragment:
                continue
            refs = _Refs()
            refs.feed(dump_dom(target))
            ids[target] = refs.ids
        if fragment and fragment not in ids[target]:
            problems.append(f"dead anchor {url} on {page}")
    return problems


def crawl(site: Path, shots: Path | None) -> int:
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/"
    todo, seen, ids = [base], set(), {}
    problems, external, images = [], set(), set()
    links: list[tuple[str, str]] = []
    while todo:
        page = todo.pop()
        if page in seen:
            continue
        seen.add(page)
        status, _ = fetch(page)
        if status != 200:  # reported below, with the pages that link to it
            continue
        refs = _Refs()
        refs.feed(dump_dom(page))
        ids[page] = refs.ids
        for src in refs.images:
            url = urljoin(page, src)
            if url.startswith("data:") or url in images:
                continue
            images.add(url)
            status, data = fetch(url)
            if status != 200 or not image_ok(data, url):
                problems.append(f"missing image {src} on {page} (HTTP {status})")
        for href in refs.links:
            url = urljoin(page, href)
            if urlparse(url).scheme not in ("http", "https"):
                continue
            if not url.startswith(base):
                external.add(url)
                continue
            target, _ = urldefrag(url)
            links.append((page, url))
            if target.endswith("/") or target.endswith(".html"):
                todo.append(target)
    problems += _link_problems(links, seen, ids)
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
        for path in SHOTS:
            name = (path.strip("/").replace("/", "_") or "home") + ".png"
            _browser("--window-size=1280,1400", f"--screenshot={shots / name}", base + path)
    server.shutdown()
    problems = sorted(set(problems))
    print(
        f"{len(seen)} pages, {len(links)} internal links, {len(images)} images, "
        f"{len(external)} external links (not fetched): {len(problems)} problems"
    )
    for line in problems:
        print("  " + line)
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the built site folder (mkdocs build)")
    parser.add_argument("--screenshots", type=Path, help="save PNGs of a few pages here")
    args = parser.parse_args()
    if not (args.site / "index.html").is_file():
        parser.error(f"{args.site} has no index.html: run `mkdocs build` first")
    return crawl(args.site, args.screenshots)


if __name__ == "__main__":
    sys.exit(main())
