"""The HTML view in a real headless browser (Debian's chromium, installed by .ci/run): the page
renders (a screenshot that is not blank) and shows every layer of the model (DOM after scripts)."""
import os
import struct
import subprocess
import zlib
from html.parser import HTMLParser

import numpy as np
import pytest

import kdsl

CHROMIUM = "/usr/bin/chromium"
EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} is absent (Debian's chromium; .ci/run installs it)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio", "--virtual-time-budget=5000"]


def chromium(tmp_path, url, *args) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"      # a fresh profile every run
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, url]
    r = subprocess.run(cmd, capture_output=True, timeout=180, env={**os.environ, "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr.decode("utf-8", "replace")[-2000:]
    return r


def decode_png(data: bytes) -> np.ndarray:
    """A PNG (8-bit RGB/RGBA, non-interlaced) as an (h, w, channels) array; zlib + struct only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = w * bpp
    out = np.zeros((h, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        if f == 0:
            cur = line
        elif f == 1:   # sub: a running sum along the row, per channel
            cur = np.cumsum(line.reshape(-1, bpp), axis=0).reshape(-1) % 256
        elif f == 2:   # up
            cur = (line + prev) % 256
        else:          # average / Paeth: sequential along the row
            cur = np.zeros(stride, dtype=np.int32)
            for i in range(stride):
                a = cur[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                if f == 3:
                    cur[i] = (line[i] + (a + b) // 2) % 256
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                    cur[i] = (line[i] + pred) % 256
        out[y] = cur
        prev = cur
    return out.reshape(h, w, bpp)


class _Counter(HTMLParser):
    def __init__(self):
        super().__init__()
        self.attrs: list[dict] = []
        self.body: dict = {}

    def handle_starttag(self, tag, attrs):
        d = dict(attrs)
        if tag == "body":
            self.body = d
        self.attrs.append(d)

    def values(self, key):
        return [a[key] for a in self.attrs if key in a]


def render(model, tmp_path, expand_blocks):
    page = tmp_path / f"{model.name}-{expand_blocks}.html"
    model.plot(str(page), expand_blocks=expand_blocks)
    url = page.resolve().as_uri()
    shot = tmp_path / f"{model.name}-{expand_blocks}.png"
    chromium(tmp_path, url, f"--screenshot={shot}", "--window-size=1200,800")
    dom = chromium(tmp_path, url, "--dump-dom").stdout.decode("utf-8")
    parsed = _Counter()
    parsed.feed(dom)
    return decode_png(shot.read_bytes()), parsed


def assert_not_blank(img):
    rgb = img[..., :3].reshape(-1, 3)
    colours = np.unique(rgb[::7], axis=0)
    assert len(colours) > 50, f"only {len(colours)} colours: a blank page?"
    graph = img[80:, :, :3]                                   # below the header bar
    assert (graph.min(axis=2) < 200).mean() > 0.01, "nothing drawn under the header"


@pytest.mark.slow
def test_resnet20_expanded_shows_every_layer(tmp_path):
    model = kdsl.load(os.path.join(EXAMPLES, "resnet20.kd"))
    img, dom = render(model, tmp_path, expand_blocks=True)
    assert img.shape[:2] == (800, 1200)
    assert_not_blank(img)
    layers = dom.values("data-layer")
    assert len(set(layers)) == len(model.layers) == 45 == len(layers)
    assert len(layers) + len(dom.values("data-op")) == len(model.graph.nodes)
    assert len(dom.values("data-input")) == 1 and len(dom.values("data-output")) == 1
    assert len(dom.values("data-cluster")) == 30 and not dom.values("data-block")
    assert dom.body["data-layer-count"] == "45" and dom.body["data-rendered"] == str(len(model.graph.nodes) + 2)
    # the boxes are coloured by family: the convolution fill (#e7f5ff) is on screen
    assert (np.abs(img[..., :3].astype(int) - [0xE7, 0xF5, 0xFF]).sum(axis=2) < 4).sum() > 500


@pytest.mark.slow
def test_resnet20_collapsed_draws_block_calls(tmp_path):
    model = kdsl.load(os.path.join(EXAMPLES, "resnet20.kd"))
    img, dom = render(model, tmp_path, expand_blocks=False)
    assert_not_blank(img)
    assert dom.values("data-block") == ["conv_bn"] + ["residual" + (f"_{i}" if i else "") for i in range(9)]
    assert dom.values("data-layer") == ["rescaling", "global_average_pooling2d", "dense"]
    assert dom.body["data-layer-count"] == "45"


@pytest.mark.slow
def test_two_inputs_shows_every_layer_and_the_shared_one(tmp_path):
    model = kdsl.load(os.path.join(EXAMPLES, "two_inputs.kd"))
    img, dom = render(model, tmp_path, expand_blocks=False)
    assert_not_blank(img)
    layers = dom.values("data-layer")
    assert len(set(layers)) == len(model.layers) == 8
    assert len(layers) == len(model.graph.nodes) == 9 and layers.count("proj") == 2
    assert sorted(dom.values("data-input")) == ["meta", "tokens"]
    assert sorted(dom.values("data-output")) == ["helpfulness", "rating"]
    assert sum("shared-link" in a.get("class", "") for a in dom.attrs) == 1


@pytest.mark.slow
def test_clicking_a_layer_shows_its_details(tmp_path):
    """The details panel (what a click shows), opened through the page's #layer=NAME deep link."""
    model = kdsl.load(os.path.join(EXAMPLES, "resnet20.kd"))
    page = tmp_path / "r.html"
    model.plot(str(page))                                         # blocks collapsed: the link expands them
    url = page.resolve().as_uri() + "#layer=residual_3/conv_bn/conv2d"
    dom = chromium(tmp_path, url, "--dump-dom", "--window-size=1200,800").stdout.decode("utf-8")
    panel = dom.split('<aside id="panel"', 1)[1].split("</aside>", 1)[0]
    assert not panel.lstrip().startswith("hidden")
    text = " ".join(panel.replace(">", "> ").split())
    for want in ("residual_3/conv_bn/conv2d", "Conv2D layer", "(batch, 32, 32, 16)", "(batch, 16, 16, 32)",
                 "4,608", "2,359,296 per sample", "kernel", "(3, 3, 16, 32)", "he_normal",
                 "blocks/resnet.kd:4:17", "return x -&gt; Conv2D(filters, kernel_size"):
        assert want in text, want
    assert 'data-layer="residual_3/conv_bn/conv2d"' in dom and 'class="node fam-conv selected"' in dom


DRIVER = """<!DOCTYPE html><html><body>
<iframe id="f" src="PAGE" width="1200" height="800"></iframe><pre id="out">pending</pre>
<script>
const f = document.getElementById("f");
f.addEventListener("load", () => {
  const w = f.contentWindow, d = f.contentDocument, out = [];
  const vp = d.getElementById("viewport"), svg = d.getElementById("canvas");
  const tf = () => vp.getAttribute("transform");
  const click = el => {            // what a real click sends: pointer down and up, then click
    el.dispatchEvent(new w.PointerEvent("pointerdown", {clientX: 5, clientY: 5, bubbles: true}));
    w.dispatchEvent(new w.PointerEvent("pointerup", {bubbles: true}));
    el.dispatchEvent(new w.MouseEvent("click", {bubbles: true}));
  };
  const t0 = tf();
  svg.dispatchEvent(new w.WheelEvent("wheel", {deltaY: -400, clientX: 300, clientY: 300, bubbles: true, cancelable: true}));
  const t1 = tf();
  out.push("zoom=" + (t0 !== t1));
  svg.dispatchEvent(new w.PointerEvent("pointerdown", {clientX: 100, clientY: 100, bubbles: true}));
  w.dispatchEvent(new w.PointerEvent("pointermove", {clientX: 160, clientY: 140, bubbles: true}));
  w.dispatchEvent(new w.PointerEvent("pointerup", {bubbles: true}));
  out.push("pan=" + (tf() !== t1));
  const before = d.querySelectorAll("[data-block]").length;
  click(d.querySelector('[data-block="residual_3"]'));
  out.push("expand=" + before + "to" + d.querySelectorAll("[data-block]").length);
  click(d.querySelector('[data-block="residual_3/conv_bn"]'));
  click(d.querySelector('[data-layer="residual_3/conv_bn/conv2d"]'));
  const panel = d.getElementById("panel");
  out.push("panel=" + (!panel.hidden && panel.textContent.includes("(3, 3, 16, 32)")));
  click(d.querySelector('[data-cluster="residual_3"] .cluster-head'));
  out.push("collapse=" + (d.querySelector('[data-block="residual_3"]') !== null));
  d.getElementById("fit").click();
  out.push("fit=" + (tf() !== null));
  document.getElementById("out").textContent = out.join(" ");
});
</script></body></html>"""


@pytest.mark.slow
def test_pan_zoom_expand_click_collapse_in_the_browser(tmp_path):
    model = kdsl.load(os.path.join(EXAMPLES, "resnet20.kd"))
    model.plot(str(tmp_path / "graph.html"))
    driver = tmp_path / "driver.html"
    driver.write_text(DRIVER.replace("PAGE", "graph.html"))
    dom = chromium(tmp_path, driver.resolve().as_uri(), "--dump-dom", "--allow-file-access-from-files",
                   "--window-size=1300,900").stdout.decode("utf-8")
    result = dom.split('<pre id="out">', 1)[1].split("</pre>", 1)[0]
    assert result == "zoom=true pan=true expand=10to12 panel=true collapse=true fit=true", result
