"""The one HTML page shell: every report page (run, regression, claims, speculative) is a self-contained file with
the same head and base style; a page adds only the rules its own content needs."""
from __future__ import annotations

import html

# Nothing may make the page scroll sideways (checked in a real browser at 1280 px, tests/test_browser.py): a wide
# table scrolls inside its own box, long JSON lines and paths wrap, images and SVG plots shrink to fit.
BASE_STYLE = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1500px}table{border-collapse:collapse}"
              "td,th{border:1px solid #ccc;padding:3px 6px;font-size:12px;vertical-align:top}th{background:#f3f3f3}"
              ".scroll{overflow-x:auto;max-width:100%}pre{white-space:pre-wrap;overflow-wrap:anywhere}"
              "code,h1,h2,h3,p,li{overflow-wrap:anywhere}img,svg{max-width:100%;height:auto}")


def esc(s) -> str:
    return html.escape(str(s))


def page(title: str, body: str, style: str = "") -> str:
    """A whole document around already-escaped `body`; the title is escaped here."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{BASE_STYLE}{style}</style></head><body>{body}</body></html>")


def ul(items) -> str:
    return "<ul>" + "".join(f"<li>{esc(x)}</li>" for x in items) + "</ul>"


def pre_json(obj) -> str:
    import json
    return "<pre>" + esc(json.dumps(obj, indent=1, default=str)) + "</pre>"
