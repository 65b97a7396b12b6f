"""Render a sweep report's index.html in headless Chromium, check it, and keep a screenshot next to it.

    python scripts/check_report.py [REPORT_DIR] [--width 1400] [--browser chromium]

Checks, each reported on one line: every image loads, the headline is present (and is the one results.md
states), the results table and the page fit the window width (no horizontal scrolling). The screenshot of
the whole page at that width is written to REPORT_DIR/screenshot.png. Exit status 0 when every check
passes, 1 when one fails, 2 when the browser cannot run. Needs Debian's ``chromium`` (``make report-check``
installs it).
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lba_core.fileio import atomic_write_bytes  # noqa: E402

#: Flags for a sandbox without a display, network or GPU, run as root; a fresh profile every time.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--mute-audio")

#: Appended to a copy of the page: measures it once everything has loaded and writes the numbers into it.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const table = document.getElementById("results");
  const headline = document.getElementById("headline");
  const result = {
    images: images.length,
    broken: images.filter(image => !(image.complete && image.naturalWidth > 0)).map(image => image.getAttribute("src")),
    headline: headline ? headline.textContent.trim() : "",
    table_right: table ? Math.ceil(table.getBoundingClientRect().right) : null,
    page_width: document.documentElement.scrollWidth,
    viewport: window.innerWidth,
    height: document.documentElement.scrollHeight,
  };
  const out = document.createElement("pre");
  out.id = "lba-check";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>"""


def _chromium(browser: str, profile: Path, *arguments: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def measure(index: Path, browser: str, width: int, work: Path) -> dict:
    """The numbers the probe script reports for ``index`` rendered ``width`` pixels wide."""
    page = index.read_text(encoding="utf-8")
    base = f'<base href="{index.parent.resolve().as_uri()}/">'
    probe = work / "probe.html"
    probe.write_text(page.replace("<head>", "<head>" + base, 1).replace("</body>", PROBE + "</body>", 1), encoding="utf-8")
    done = _chromium(browser, work / "profile-measure", f"--window-size={width},1000", "--virtual-time-budget=10000",
                     "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="lba-check">(.*?)</pre>', done.stdout, re.S)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"{browser} rendered nothing (exit {done.returncode}): {done.stderr.strip()[-300:]}")
    return json.loads(html.unescape(found.group(1)))


def screenshot(index: Path, browser: str, width: int, height: int, work: Path) -> bytes:
    target = work / "screenshot.png"
    done = _chromium(browser, work / "profile-shot", f"--window-size={width},{height}", "--virtual-time-budget=10000",
                     f"--screenshot={target}", index.resolve().as_uri())
    if done.returncode != 0 or not target.is_file():
        raise RuntimeError(f"{browser} took no screenshot (exit {done.returncode}): {done.stderr.strip()[-300:]}")
    return target.read_bytes()


def expected_headline(folder: Path) -> str | None:
    """The headline results.md states (bold first paragraph), to compare with the page's."""
    results = folder / "results.md"
    if not results.is_file():
        return None
    found = re.search(r"^\*\*(.+)\*\*$", results.read_text(encoding="utf-8"), re.M)
    return found.group(1) if found else None


def check(folder: Path, browser: str = "chromium", width: int = 1400) -> list[tuple[bool, str]]:
    """(passed, description) per check; writes ``folder/screenshot.png``."""
    index = folder / "index.html"
    with tempfile.TemporaryDirectory(prefix="lba-report-check-") as temporary:
        work = Path(temporary)
        numbers = measure(index, browser, width, work)
        image_tags = len(re.findall(r"<img\b", index.read_text(encoding="utf-8")))
        headline = expected_headline(folder)
        results = [
            (numbers["images"] == image_tags and not numbers["broken"],
             f"images: {numbers['images'] - len(numbers['broken'])} of {image_tags} loaded"
             + (f" (broken: {', '.join(numbers['broken'])})" if numbers["broken"] else "")),
            (bool(numbers["headline"]) and (headline is None or numbers["headline"] == headline),
             f"headline: {numbers['headline']!r}" + ("" if headline is None or numbers["headline"] == headline
                                                      else f" differs from results.md's {headline!r}")),
            (numbers["table_right"] is not None and numbers["table_right"] <= width,
             f"table: right edge at {numbers['table_right']} px of a {width} px window"),
            (numbers["page_width"] <= numbers["viewport"],
             f"page: {numbers['page_width']} px wide in a {numbers['viewport']} px viewport (no horizontal scrolling)"),
        ]
        shot = screenshot(index, browser, width, max(600, min(int(numbers["height"]), 16000)), work)
    atomic_write_bytes(folder / "screenshot.png", shot)
    results.append((True, f"screenshot: {folder / 'screenshot.png'} ({width} x {numbers['height']} px)"))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=Path("reports/default"), help="report folder")
    parser.add_argument("--browser", default="chromium", help="Chromium executable (default: chromium)")
    parser.add_argument("--width", type=int, default=1400, help="window width in pixels (default: 1400)")
    args = parser.parse_args(argv)
    if not (args.folder / "index.html").is_file():
        print(f"check_report: error: no index.html in {args.folder}", file=sys.stderr)
        return 2
    if shutil.which(args.browser) is None:
        print(f"check_report: error: no {args.browser} on PATH (Debian: apt-get install chromium; or make report-check)",
              file=sys.stderr)
        return 2
    try:
        results = check(args.folder, args.browser, args.width)
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        print(f"check_report: error: {error}", file=sys.stderr)
        return 2
    for passed, text in results:
        print(f"{'ok  ' if passed else 'FAIL'} {text}")
    return 0 if all(passed for passed, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
