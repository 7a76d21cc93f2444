"""Screenshots of `agentrl view` for the README: the runs page and one episode page.

    python bench/viewer_screenshots.py --db /path/runs.db [--episode ID] [--out docs/img]

Starts `agentrl view` on a free port (read-only: fine on a database a run is writing), drives
headless Chromium through playwright and writes `viewer-runs.png` and `viewer-episode.png`.
Without --episode it picks a train episode of 6 to 12 steps from the run with the most stored
step signals (spa / oprl / igpo), preferring a won one.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.viewer_db import CHROMIUM, CHROMIUM_ARGS, running_viewer  # noqa: E402


def pick_episode(db: str) -> int:
    con = sqlite3.connect(f"{Path(db).resolve().as_uri()}?mode=ro", uri=True)
    try:
        row = con.execute(
            """
            SELECT e.id FROM episodes e
            JOIN steps s ON s.episode_id = e.id JOIN advantages a ON a.step_id = s.id
            WHERE e.split = 'train' AND e.length BETWEEN 6 AND 12
            GROUP BY e.id
            ORDER BY SUM(a.signals != '{}') DESC, e.won DESC, e.id
            LIMIT 1
            """
        ).fetchone()
        if row is None:
            row = con.execute("SELECT id FROM episodes ORDER BY length DESC LIMIT 1").fetchone()
    finally:
        con.close()
    if row is None:
        raise SystemExit(f"{db} has no episodes")
    return int(row[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--episode", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"))
    ap.add_argument("--width", type=int, default=1360)
    ap.add_argument("--height", type=int, default=1200, help="of the episode shot")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    episode = args.episode or pick_episode(args.db)
    with running_viewer(args.db) as base:
        with sync_playwright() as p:
            exe = CHROMIUM if os.path.exists(CHROMIUM) else None
            browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": 480})
            page.goto(base + "/")
            box = page.locator("form#compare-form, main > p").first.bounding_box()
            height = int(box["y"] + box["height"] + 24) if box else 480  # down to the table's end
            page.screenshot(
                path=str(out / "viewer-runs.png"),
                full_page=True,
                clip={"x": 0, "y": 0, "width": args.width, "height": height},
            )
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto(f"{base}/episode/{episode}")
            page.screenshot(path=str(out / "viewer-episode.png"))
            browser.close()
    for name in ("viewer-runs.png", "viewer-episode.png"):
        print(
            f"wrote {out / name} ({(out / name).stat().st_size // 1024} KiB)"
            + (f", episode {episode}" if "episode" in name else "")
        )


if __name__ == "__main__":
    main()
