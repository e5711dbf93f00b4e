"""The HTML reports (run, cost, regression, claims) opened in a real browser, as a person would see them: headless
Chromium from Debian's packages (`apt-get install chromium`; .ci/run installs it). Each page is built from a small
real results store (SQLite, the stores the other report tests make), then loaded at 1280 px: every plot (<img> or
inline <svg>) has drawn, every link to raw rows resolves to a file that exists (or an anchor on the page), the page
does not scroll sideways, no emoji glyph is left to fall back to an empty box, and a screenshot is saved in the
test's tmp dir. Skipped when no Chromium is installed."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from conftest import run_cli

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian: apt-get install chromium)")

WIDTH = 1280
# Run once the page has loaded (images decoded): what a person would see, as JSON in a <pre> --dump-dom returns.
PROBE = """<script>window.addEventListener('load', () => {
  const r = {scrollWidth: document.scrollingElement.scrollWidth, innerWidth: window.innerWidth, imgs: [], svgs: [],
             anchors: [], hrefs: []};
  for (const i of document.images) r.imgs.push([i.alt, i.complete ? i.naturalWidth : 0]);
  for (const s of document.querySelectorAll('svg')) {
    const b = s.getBoundingClientRect();
    r.svgs.push([s.getAttribute('aria-label'), b.width, b.height, s.querySelectorAll('circle,path,rect').length]);
  }
  for (const a of document.querySelectorAll('a[href]')) {
    const h = a.getAttribute('href');
    if (h.startsWith('#')) r.anchors.push([h, !!document.getElementById(decodeURIComponent(h.slice(1)))]);
    else r.hrefs.push(h);
  }
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
});</script>"""
# Emoji with an emoji presentation (they need an emoji font; without one, an empty box)
EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2705\u274C\u274E\u2753-\u2755\u2B50\u2B55\u231A\u231B\u23E9-\u23F3]")


def chromium(*args, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--disable-extensions", f"--window-size={WIDTH},900", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def look(page: Path, shots: Path) -> dict:
    """Open `page` in Chromium: the probe's findings, plus a screenshot of it saved under `shots`."""
    probe = page.with_name(page.stem + ".probe.html")  # next to the page: relative links resolve the same
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    r = chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    probe.unlink()
    m = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout, re.S)
    assert m, f"no probe result for {page.name}: {r.stderr[-1500:]}"
    found = json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                       .replace("&amp;", "&"))
    shot = shots / f"{page.stem}.png"
    chromium(f"--screenshot={shot}", page.as_uri())
    assert shot.is_file() and shot.stat().st_size > 1000, f"no screenshot of {page.name}"
    return found


def check(page: Path, shots: Path, min_plots: int = 1) -> dict:
    f = look(page, shots)
    assert f["scrollWidth"] <= f["innerWidth"], f"{page.name} scrolls sideways: {f['scrollWidth']} > {WIDTH}"
    assert all(w > 0 for _, w in f["imgs"]), f"an image did not load in {page.name}: {f['imgs']}"
    assert all(w > 0 and h > 0 and n > 0 for _, w, h, n in f["svgs"]), f"an empty SVG in {page.name}: {f['svgs']}"
    assert len(f["imgs"]) + len(f["svgs"]) >= min_plots, f"{page.name}: expected plots, found none"
    assert all(ok for _, ok in f["anchors"]), f"an anchor with no target in {page.name}: {f['anchors']}"
    for h in f["hrefs"]:
        u = urlsplit(h)
        if u.scheme in ("http", "https", "mailto", "data"):
            continue
        target = (page.parent / unquote(u.path)).resolve()
        assert target.is_file(), f"{page.name} links to {h}, which does not exist"
    text = page.read_text(encoding="utf-8")
    bad = sorted(set(EMOJI.findall(text)))
    assert not bad, f"{page.name} uses emoji glyphs {bad} (no emoji font everywhere: empty boxes)"
    return f


# --- the stores -------------------------------------------------------------------------------------------------

def _job(key, model, scenario, variant, params=None):
    from test_report import FakeJob
    j = FakeJob(key, scenario=scenario, model=model, variant=variant)
    j.params = params or {"prompt_tokens": 8}
    return j


def _m(name, value, unit="", n=1, spread=None, kind=None, labels=None, source="measured", hib=None, samples=None):
    return {"name": name, "value": value, "unit": unit, "n": n, "spread": spread, "spread_kind": kind,
            "labels": labels or {}, "source": source, "higher_is_better": hib, "samples": samples,
            "note": "estimated from the device profile" if source == "estimated" else ""}


def which_store(out: Path) -> str:
    """Two model families at three levels with quality and cost rows (as suites/which_slm.yaml records them), a
    depth sweep (the run page's PNG plot) and one unsupported job with a long error line."""
    from slmbench.store import Store
    st = Store(out)
    st.start_run("which", "which_slm", "", "sha", {"host": {"cpu_model": "x" * 40}, "versions": {},
                                                     "env": {"PATH": "/a/very/long/path/" * 30}})
    variants = [("smollm2-135m:fp32", {}, "llama", 1.02, 0.52, 40.0, 700, 0.05, 540),
                ("smollm2-135m:q4_k_m", {"backend": "llamacpp", "quantization": "q4_k_m"}, "llama", 1.05, 0.50,
                 90.0, 250, 0.02, 105),
                ("gemma3-270m:q4_k_m", {"backend": "llamacpp"}, "gemma3", 0.95, 0.55, 45.0, 500, 0.04, 253)]
    for i, (model, var, fam, bpb, acc, tok_s, rss, j, mb) in enumerate(variants):
        info = {"model": {"model_type": fam, "file_bytes": mb * 1e6, "quantization": var.get("quantization")}}
        jobs = [(_job(f"l{i}", model, "latency", var), [_m("decode_tok_s", tok_s, "tok/s", 5, tok_s * 0.02, "ci95",
                                                           hib=True, samples=[tok_s] * 5)]),
                (_job(f"m{i}", model, "memory", var), [_m("peak_mem_mb", rss, "MB"), _m("file_mb", mb, "MB")]),
                (_job(f"e{i}", model, "energy", var), [_m("decode_j_per_token", j, "J/token", source="estimated")]),
                (_job(f"p{i}", model, "perplexity", var), [_m("bits_per_byte", bpb, "bits/B", 1400,
                                                              labels={"text": "austen.txt"})]),
                (_job(f"a{i}", model, "accuracy", var), [
                    _m("acc_norm", acc, "fraction", 25, 0.1, "stderr", {"task": t}) for t in ("arc_easy", "piqa")])]
        for d in (0, 512):
            jobs.append((_job(f"d{i}{d}", model, "latency", var, {"prompt_tokens": 8, "depth": d}),
                         [_m("decode_tok_s", tok_s * (1 - d / 2048), "tok/s", 5, 1.0, "ci95", hib=True)]))
        for job, metrics in jobs:
            st.record_job("which", job, "ok", None, metrics, 1.0, {**info, "threads": 2})
    st.record_job("which", _job("u", "gemma3-270m:q4_k_m", "speculative", {"backend": "llamacpp"}), "unsupported",
                  "backend llamacpp lacks torch_model: " + "a long reason without spaces/" * 12, [], 0.0, {})
    st.finish_run("which", "finished")
    st.close()
    return "which"


def cost_store(out: Path) -> None:
    """A run that measured an endpoint: the run page then carries the cloud-vs-device cost section."""
    from slmbench.store import Store
    from test_report import FakeJob, metric, put_run
    st = Store(out)
    put_run(st, "r1", jobs=[(FakeJob("j1"), [metric("decode_tok_s", 50.0)]),
                            (FakeJob("j2", device="cloud-local", scenario="serving"), [metric("decode_tok_s", 40.0)])])
    st.close()


def nightly_store(out: Path) -> None:
    """Four nights of one suite, decode slowing by 30% on the last: a regression and a step in the trend."""
    from slmbench.store import Store
    from test_report import FakeJob, metric, put_run
    st = Store(out)
    for k, centre in enumerate((50.0, 50.2, 49.9, 35.0)):
        samples = [centre * (1 + 0.002 * i) for i in range(8)]
        put_run(st, f"night{k}", suite="nightly", created=1000.0 + 86400 * k,
                jobs=[(FakeJob("j1"), [metric("decode_tok_s", samples[4], samples=samples),
                                       metric("peak_mem_mb", 500.0 + k, "MB", hib=False)])])
    st.close()


# --- the pages --------------------------------------------------------------------------------------------------

def test_run_page_with_the_which_slm_section(tmp_path):
    from slmbench.report import render
    from slmbench.store import Store
    rid = which_store(tmp_path / "out")
    st = Store(tmp_path / "out")
    page = tmp_path / "run.html"
    page.write_text(render.to_html(st.rows(rid), rid, st.manifest(rid), st.job_info(rid)), encoding="utf-8")
    f = check(page, tmp_path, min_plots=8)
    assert len(f["imgs"]) == 1 and len(f["svgs"]) >= 8  # the depth sweep; frontiers: 2 qualities × 4 costs
    html = page.read_text()
    assert html.count("<title>#3 gemma3-270m:q4_k_m") >= 8  # every point says which variant it is on hover
    assert "Quality vs cost</h2>" not in html  # the which section stands in for the one-family section
    from slmbench.report import which
    s = which.section(st.rows(rid), st.job_info(rid))
    front = s.json()["frontiers"]  # fp32 is slower and worse than Gemma: off the front
    assert front["bits_per_byte|decode_tok_s"] == ["smollm2-135m:q4_k_m", "gemma3-270m:q4_k_m"]
    assert front["accuracy|file_mb"] == ["smollm2-135m:q4_k_m", "gemma3-270m:q4_k_m"]
    assert "0.040 (est.)" in s.markdown() and "#3 gemma3-270m:q4_k_m" in s.markdown()


def test_cost_page(tmp_path):
    cost_store(tmp_path / "out")
    page = tmp_path / "cost.html"
    rc, _, err = run_cli("report", "--out", tmp_path / "out", "--cost", "--format", "html", "--output", page)
    assert rc == 0, err
    assert "Cloud vs device: cost per token" in page.read_text()
    check(page, tmp_path, min_plots=0)


def test_regression_page(tmp_path):
    nightly_store(tmp_path / "out")
    page = tmp_path / "regression.html"
    rc, md, err = run_cli("compare", "night2", "night3", "--out", tmp_path / "out", "--html", page)
    assert rc in (0, 1), err
    assert "regressed" in md
    check(page, tmp_path, min_plots=1)


def test_claims_page(tmp_path):
    from test_claims import _stored_run

    from slmbench.plan import parse_suite
    from slmbench.report import claims as rcl
    st, p = _stored_run(tmp_path)
    _, page = rcl.from_store(st, "r1", str(p), tmp_path / "rep", parse_suite(str(p)))
    f = check(Path(page), tmp_path, min_plots=1)
    assert f["hrefs"] or f["anchors"]  # the verdicts link to their rows
