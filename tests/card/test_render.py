"""The card page rendered by headless Chromium: every figure decodes and nothing overflows the window.

Skips only when no Chromium/Chrome binary is installed (``.ci/run`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from medrobust.card import make_card

from .conftest import TINY

_BROWSERS = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# appended to a copy of the page only: the card itself carries no script
_PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var w = window.innerWidth;
  var r = {width: w, scrollWidth: document.documentElement.scrollWidth, bodyScroll: document.body.scrollWidth,
           images: imgs.length, decoded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
           imagesInside: imgs.filter(function (i) { return i.getBoundingClientRect().right <= w + 0.5; }).length};
  var pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
});
</script>"""


def _browser() -> str | None:
    for name in _BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _render(page_path, tmp, width: int) -> dict:
    """Load ``page_path`` (with the probe appended) in headless Chromium at ``width`` px; the probe's findings."""
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium/Chrome browser installed (apt-get install chromium)")
    page = page_path.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>")
    probe_page = tmp / "probe.html"
    probe_page.write_text(page, encoding="utf-8")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
           f"--window-size={width},900", "--virtual-time-budget=5000", "--dump-dom", probe_page.as_uri()]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="probe">(.*?)</pre>', out.stdout, re.S)
    assert m, f"no probe in the DOM dump (rc {out.returncode}): {out.stderr[-2000:]}"
    return json.loads(m.group(1).replace("&quot;", '"'))


@pytest.mark.parametrize("width", [1200, 420])
def test_card_renders_in_headless_chromium(card_inputs, tmp_path_factory, width):
    if _browser() is None:
        pytest.skip("no Chromium/Chrome browser installed (apt-get install chromium)")
    model, data, dims = card_inputs
    if dims == 3:
        pytest.skip("the 2-D card has every figure; rendering once per width is enough")
    tmp = tmp_path_factory.mktemp("render")
    res = make_card(model, data, tmp / "card", labels=data / "labels.csv", budget=TINY, input_size=(8, 8), progress=False)
    r = _render(res.html, tmp, width)
    assert r["images"] == 3 and r["decoded"] == 3, r  # reliability, sensitivity, robustness figures
    assert r["imagesInside"] == 3, r
    assert r["scrollWidth"] <= r["width"] and r["bodyScroll"] <= r["width"], r  # no horizontal overflow


@pytest.mark.parametrize("seg_inputs", [3], indirect=True, ids=["3d"])  # one segmentation card per width is enough
@pytest.mark.parametrize("width", [1200, 420])
def test_segmentation_card_renders_in_headless_chromium(seg_inputs, tmp_path_factory, width):
    if _browser() is None:
        pytest.skip("no Chromium/Chrome browser installed (apt-get install chromium)")
    net, root, dims = seg_inputs
    from medrobust.card import CardBudget

    tmp = tmp_path_factory.mktemp("render_seg")
    budget = CardBudget(attack_cases=2, eps=(4 / 255,), pgd_steps=(2,), families=("gaussian_noise",), severities=[0.0, 0.3],
                        n_boot=20)  # fmt: skip
    res = make_card(net, root / "data", tmp / "card", masks=root / "masks", budget=budget, input_size=(16,) * 3, progress=False)
    r = _render(res.html, tmp, width)
    assert r["images"] == 2 and r["decoded"] == 2 and r["imagesInside"] == 2, r  # Dice vs severity, robust Dice vs eps
    assert r["scrollWidth"] <= r["width"] and r["bodyScroll"] <= r["width"], r
