"""Load time of `tidlc report` pages in headless Chromium.

Builds three pages (ultraface compiled whole, ultraface partitioned with concat on the host, and a
300-layer conv/relu chain), opens each from disk in headless Chromium (selenium + chromedriver) and
prints its size and load time: navigation start to the end of the load event (the page's script runs
before it: parse of the embedded JSON, summary, SVG graph and table), best of ``--repeat`` loads.

    apt-get install chromium chromium-driver && pip install selenium
    python benchmarks/report_load.py [--repeat 5] [--screenshot docs/img/report.png]
    python benchmarks/report_load.py --repeat 1 --views docs/img    # the pictures of docs/report.md
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))


def _chain(path: str, n_layers: int) -> None:
    from test_report import _chain_model
    _chain_model(path, n_layers)


def _pages(tmp: str) -> list[tuple[str, str]]:
    from tidlc.cli import main
    onnx = os.path.join(ROOT, "examples", "ultraface", "ultraface-rfb320.onnx")
    out = []
    for key, extra in (("ultraface", []), ("ultraface-partitioned", ["--deny-op-type", "concat"])):
        d = os.path.join(tmp, key)
        main(["compile", onnx, *extra, "-o", d])
        main(["report", d, "-o", os.path.join(tmp, key + ".html"), "--fps", "30"])
        out.append((key, os.path.join(tmp, key + ".html")))
    chain = os.path.join(tmp, "chain300.onnx")
    _chain(chain, 300)
    main(["report", chain, "-O0", "-o", os.path.join(tmp, "chain300.html")])
    out.append(("chain-300", os.path.join(tmp, "chain300.html")))
    return out


def _frames(tmp: str) -> tuple[str, str]:
    """A calibration folder and an input image: crops of scikit-image's photos when installed,
    else smooth synthetic scenes (the SNR view needs only plausible activations)."""
    import cv2
    import numpy as np
    calib = os.path.join(tmp, "calib")
    os.makedirs(calib)
    try:
        from skimage import data
        photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    except ImportError:
        rng = np.random.default_rng(0)
        y, x = np.mgrid[0:240, 0:320]
        photos = [np.stack([(x * (i + 1) + y * 2 + rng.normal(0, 9, x.shape)) % 256 for i in range(3)], -1)
                  .astype(np.uint8) for _ in range(4)]
    for i, im in enumerate(photos):
        cv2.imwrite(os.path.join(calib, f"{i}.png"), cv2.resize(im[..., ::-1], (320, 240)))
    return calib, os.path.join(calib, "0.png")


def _views(tmp: str, driver, outdir: str) -> None:
    """docs/report.md's pictures: summary, graph with a layer's panel, the table sorted by cycles,
    the graph coloured by SNR (--calib/--input) and a partitioned model."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from tidlc.cli import main as tidlc
    onnx = os.path.join(ROOT, "examples", "ultraface", "ultraface-rfb320.onnx")
    calib, image = _frames(tmp)
    snr = os.path.join(tmp, "snr.html")
    tidlc(["report", onnx, "--calib", calib, "--input", image, "--mean", "127,127,127", "--scale", "0.0078125",
           "--fps", "30", "-o", snr])
    os.makedirs(outdir, exist_ok=True)

    def shot(name: str, element_id: str) -> None:
        el = driver.find_element(By.ID, element_id)
        driver.execute_script("arguments[0].scrollIntoView()", el)
        el.screenshot(os.path.join(outdir, name))
        print(f"picture: {os.path.join(outdir, name)}")

    driver.get("file://" + snr)
    shot("report-summary.png", "summary")
    driver.execute_script("window.tidlcReport.select(5)")
    shot("report-graph.png", "graph-view")
    Select(driver.find_element(By.ID, "measure")).select_by_visible_text("SNR vs float (dB)")
    shot("report-snr.png", "graph-view")
    header = next(th for th in driver.find_elements(By.CSS_SELECTOR, "#layers th") if th.text.strip() == "cycles")
    header.click()  # most expensive first
    shot("report-table.png", "table-view")
    driver.get("file://" + os.path.join(tmp, "ultraface-partitioned.html"))
    Select(driver.find_element(By.ID, "measure")).select_by_visible_text("accelerated vs host")
    driver.execute_script("var t=window.tidlcReport, r=t.rows; for (var i=0;i<r.length;i++)"
                          " if (r[i].accel==='host') { t.select(i); t.centre(i); break; }")
    shot("report-partitioned.png", "graph-view")


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--screenshot", metavar="PNG", help="save a screenshot of the ultraface page")
    ap.add_argument("--views", metavar="DIR", help="write docs/report.md's pictures (report-*.png) into DIR")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            pages = _pages(tmp)
        driver = _driver()
        try:
            print(f"{'page':24s} {'KB':>7s} {'load ms':>8s} {'script ms':>9s}")
            for key, path in pages:
                best = best_dom = None
                for _ in range(args.repeat):
                    driver.get("file://" + path)
                    t = driver.execute_script(
                        "var n=performance.getEntriesByType('navigation')[0];"
                        "return [n.loadEventEnd - n.startTime, n.domContentLoadedEventEnd - n.responseEnd];")
                    best = t[0] if best is None else min(best, t[0])
                    best_dom = t[1] if best_dom is None else min(best_dom, t[1])
                print(f"{key:24s} {os.path.getsize(path) / 1024:7.0f} {best:8.1f} {best_dom:9.1f}")
            if args.screenshot:
                driver.get("file://" + pages[0][1])
                driver.execute_script("window.tidlcReport.select(5);"
                                      "document.getElementById('graph-view').scrollIntoView()")
                driver.save_screenshot(args.screenshot)
                print(f"screenshot: {args.screenshot}")
            if args.views:
                _views(tmp, driver, args.views)
        finally:
            driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
