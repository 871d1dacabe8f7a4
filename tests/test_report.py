"""`tidlc report`: one self-contained HTML page (docs/report.md), checked as a file and, when
chromium + chromedriver + selenium are installed, in headless Chromium."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from tidlc.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ULTRAFACE = os.path.join(ROOT, "examples", "ultraface", "ultraface-rfb320.onnx")


def _data(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.DOTALL)
    assert m, "no embedded data block"
    return json.loads(m.group(1))


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """Two reports: ultraface compiled whole, and compiled with concat denied (partitioned)."""
    tmp = tmp_path_factory.mktemp("report")
    out = {}
    for key, extra in (("whole", []), ("partitioned", ["--deny-op-type", "concat"])):
        d = str(tmp / key)
        assert main(["compile", ULTRAFACE, *extra, "-o", d]) == 0
        html = str(tmp / f"{key}.html")
        assert main(["report", d, "-o", html, "--fps", "30"]) == 0
        out[key] = html
    return out


def _read(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


@pytest.mark.parametrize("key", ["whole", "partitioned"])
def test_page_is_self_contained(pages, key):
    page = _read(pages[key])
    assert page.count('id="report-data"') == 1
    assert not re.search(r"<(script|link)[^>]+(src|href)=[\"']?https?://", page, re.IGNORECASE)
    assert not re.search(r"@import|url\(\s*['\"]?https?:", page, re.IGNORECASE)
    doc = _data(page)
    assert doc["schema"] == "tidlc.report/1"
    assert set(doc["graph"]) == {"nodes", "edges", "layout"}
    assert len(doc["graph"]["layout"]["xy"]) == len(doc["graph"]["nodes"])
    if key == "whole":
        assert doc["perf"]["schema"] == "tidlc.perf/1"
        named = {n["name"] for n in doc["graph"]["nodes"] if n["layer"] is not None}
        assert len(named) > 40
    else:
        assert doc["perf"]["schema"] == "tidlc.perf.partitioned/1"
        hosts = [n for n in doc["graph"]["nodes"] if n["host"]]
        assert {n["op"] for n in hosts} == {"concat"} and len(hosts) == 3
        assert len(doc["perf"]["subgraph_reports"]) == len(doc["perf"]["subgraphs"])


def test_layout_is_layered():
    from tidlc.report import layout
    lay = layout(4, [[0, 1], [0, 2], [1, 3], [2, 3]])
    ys = [p[1] for p in lay["xy"]]
    assert ys[0] < ys[1] == ys[2] < ys[3]
    assert lay["xy"][1][0] != lay["xy"][2][0]


def _chain_model(path, n_layers):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(n_layers // 2):
        w = helper.make_tensor(f"w{i}", TensorProto.FLOAT, [8, 8, 3, 3], rng.standard_normal(8 * 8 * 9).astype("float32") * 0.1)
        inits.append(w)
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        prev = f"r{i}"
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 32, 32])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 8, 32, 32])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)


def test_300_layer_page_is_small(tmp_path):
    model = str(tmp_path / "chain.onnx")
    _chain_model(model, 300)
    out = str(tmp_path / "chain.html")
    assert main(["report", model, "-O0", "-o", out]) == 0
    size = os.path.getsize(out)
    doc = _data(_read(out))
    print(f"300-layer page: {size / 1024:.0f} KB, {len(doc['graph']['nodes'])} nodes")
    assert len(doc["graph"]["nodes"]) >= 150
    assert size < 2 * 1024 * 1024


# ----------------------------------------------------------------------------- headless Chromium
def _driver():
    try:
        from selenium import webdriver
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    chrome = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    driver_bin = shutil.which("chromedriver")
    if not chrome or not driver_bin:
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        return webdriver.Chrome(service=Service(driver_bin), options=opts)
    except Exception as exc:  # noqa: BLE001 - a broken browser install is a skip, not a failure
        pytest.skip(f"cannot start headless chromium: {exc}")


@pytest.mark.parametrize("key", ["whole", "partitioned"])
def test_page_in_browser(pages, key, tmp_path):
    from selenium.webdriver.common.by import By
    doc = _data(_read(pages[key]))
    driver = _driver()
    try:
        driver.get("file://" + os.path.abspath(pages[key]))
        severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not severe, severe
        rows = driver.find_elements(By.CSS_SELECTOR, "#layers tbody tr")
        assert len(rows) == len(doc["graph"]["nodes"])
        # sort by cycles: the most expensive layer first
        driver.find_element(By.CSS_SELECTOR, '#layers th[data-key="cycles"]').click()
        first = driver.find_element(By.CSS_SELECTOR, "#layers tbody tr td").text
        reports = doc["perf"].get("subgraph_reports") or [doc["perf"]]
        by_cycles = {lay["name"]: lay["cycles"] for rep in reports for lay in rep["layers"]}
        in_graph = {n["name"] for n in doc["graph"]["nodes"] if n["layer"] is not None}
        top = max((c, n) for n, c in by_cycles.items() if n in in_graph)
        assert by_cycles[first] == top[0], (first, top)
        # filter
        box = driver.find_element(By.ID, "filter")
        box.send_keys(first)
        assert 1 <= len(driver.find_elements(By.CSS_SELECTOR, "#layers tbody tr")) < len(rows)
        box.clear()
        # click a node: the panel shows its name
        node = driver.find_element(By.CSS_SELECTOR, '#graph g.node[data-index="3"]')
        name = doc["graph"]["nodes"][3]["name"]
        driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", node)
        panel = driver.find_element(By.ID, "panel")
        assert panel.is_displayed()
        assert driver.find_element(By.ID, "panel-name").text == name
        if key == "partitioned":  # host ops are drawn apart
            assert driver.find_elements(By.CSS_SELECTOR, "#graph g.node.host")
        # every colour measure draws without errors
        n_measures = len(driver.find_elements(By.CSS_SELECTOR, "#measure option"))
        for i in range(n_measures):
            driver.execute_script("var s=document.getElementById('measure');s.value=arguments[0];"
                                  "s.dispatchEvent(new Event('change'))", str(i))
        driver.execute_script("document.getElementById('measure').value='0';"
                              "document.getElementById('measure').dispatchEvent(new Event('change'))")
        severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not severe, severe
        shot = str(tmp_path / f"report-{key}.png")
        driver.save_screenshot(shot)
        print(f"screenshot: {shot}")
        assert os.path.getsize(shot) > 10_000
    finally:
        driver.quit()


def test_snr_from_compare(tmp_path):
    """--input: `tidlc compare` rows are embedded once and the SNR measure is offered."""
    import numpy as np
    x = str(tmp_path / "x.npy")
    np.save(x, np.random.default_rng(0).standard_normal((1, 3, 240, 320)).astype("float32"))
    out = str(tmp_path / "snr.html")
    assert main(["report", ULTRAFACE, "--input", x, "-o", out]) == 0
    page = _read(out)
    doc = _data(page)
    rows = doc["compare"]["layers"]
    names = {n["name"] for n in doc["graph"]["nodes"]}
    assert rows and all(r["name"] in names for r in rows)
    assert "snr_db" in rows[0] and "SNR vs float" in page


def test_snr_uses_the_compile_options(tmp_path):
    """--calib with quantization and pre-processing flags: the embedded rows are exactly what
    `tidlc compare` prints with the same flags (here 16-bit, minmax, mean/scale)."""
    import numpy as np
    rng = np.random.default_rng(1)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(2):
        np.save(calib / f"{i}.npy", rng.uniform(0, 255, (1, 3, 240, 320)).astype("float32"))
    flags = ["--calib", str(calib), "--bits", "16", "--calib-method", "minmax", "--mean", "127", "--scale", "0.0078125"]
    out = str(tmp_path / "snr16.html")
    assert main(["report", ULTRAFACE, *flags, "-o", out]) == 0
    rows = _data(_read(out))["compare"]["layers"]
    ref = str(tmp_path / "compare.json")
    assert main(["compare", ULTRAFACE, *flags, "--json", ref]) == 0
    with open(ref, encoding="utf-8") as fh:
        assert rows == json.load(fh)["layers"]
    assert min(r["snr_db"] for r in rows) > 40  # 16-bit: the flags reached the quantizer


def test_model_file_split_by_deny_list(tmp_path):
    """A model file with a deny list is reported split as `tidlc compile` would split it."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], rng.standard_normal(108).astype("float32"))
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [4, 4, 3, 3], rng.standard_normal(144).astype("float32"))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Erf", ["c"], ["y"], name="odd"),
             helper.make_node("Conv", ["y", "w2"], ["z"], name="conv2", pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 16, 16])], [w, w2])
    model = str(tmp_path / "m.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), model)
    out = str(tmp_path / "m.html")
    assert main(["report", model, "--deny-op-type", "erf", "-o", out]) == 0
    doc = _data(_read(out))
    by_name = {n["name"]: n for n in doc["graph"]["nodes"]}
    assert by_name["odd"]["host"] and by_name["odd"]["host_index"] is not None
    assert by_name["odd"]["layer"] is None  # no C7x layer, even when a subgraph input shares its name
    assert by_name["conv"]["region"] == 0 and by_name["conv2"]["region"] == 1
    assert by_name["conv2"]["layer"][0] == 1


def test_snr_needs_the_model_file(pages, tmp_path):
    out_dir = os.path.splitext(pages["whole"])[0]
    assert main(["report", out_dir, "--input", "x.npy", "-o", str(tmp_path / "x.html")]) == 2
