"""insta report at scale: a 1,000-target selection as one page: file size, render time, and the
time headless Chromium takes to open it and take a screenshot.

    python benchmarks/report.py        # writes benchmarks/results/report.json

The selection: the first 1,000 NIV2 tasks of the task table (their one-line summaries) as
targets against p3:t0-train, top-5, method hybrid; the page: `insta report`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    insta = str(Path(sys.executable).with_name("insta"))
    with tempfile.TemporaryDirectory(prefix="insta-report-") as tmp:
        targets = Path(tmp) / "targets.jsonl"
        rows = [json.loads(x) for x in (DATA / "niv2" / "tasks.jsonl").read_text().splitlines()[:1000]]
        targets.write_text("".join(json.dumps({"id": r["name"], "instruction": r["summary"]}) + "\n" for r in rows))
        sel = Path(tmp) / "sel.json"
        subprocess.run([insta, "select", "-p", "p3:t0-train", "--targets", str(targets), "-k", "5", "--method", "hybrid",
                        "-o", str(sel), "--json", "-q"], check=True, stdout=subprocess.DEVNULL)
        page = Path(tmp) / "sel.html"
        times = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([insta, "report", str(sel), "-o", str(page), "-q"], check=True)
            times.append(time.perf_counter() - start)
        doc = {"targets": 1000, "selection_bytes": sel.stat().st_size, "page_bytes": page.stat().st_size,
               "report_seconds_median": sorted(times)[1], "report_seconds": times}
        browser = shutil.which("chromium")
        if browser:
            shot = Path(tmp) / "shot.png"
            start = time.perf_counter()
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()],
                           check=True, capture_output=True, timeout=300)
            doc["chromium_open_and_screenshot_seconds"] = time.perf_counter() - start
            start = time.perf_counter()
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            f"--screenshot={shot}", "--window-size=1200,900", "about:blank"],
                           check=True, capture_output=True, timeout=300)
            doc["chromium_blank_page_seconds"] = time.perf_counter() - start
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "report.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
