"""Small HTML building blocks for the console: escaping, tables, the page layout."""

from __future__ import annotations

import functools
import html
import json
import time
from importlib.resources import files
from string import Template
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from broker import __version__

NAV = (("/worklist", "Worklist"), ("/queries", "Queries"), ("/messages", "Messages"),
       ("/outbox", "Outbox"), ("/mappings", "Mappings"), ("/health", "Health"))


@functools.cache
def template(name: str) -> Template:
    return Template(files("broker.admin").joinpath("templates", name).read_text("utf-8"))


@functools.cache
def static_names() -> frozenset[str]:
    """The files shipped under static/: the only names /static/ serves."""
    return frozenset(f.name for f in files("broker.admin").joinpath("static").iterdir()
                     if f.is_file())


def static_file(name: str) -> bytes:
    return files("broker.admin").joinpath("static", name).read_bytes()


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""


def status(value: str) -> str:
    css = value.replace(" ", "_")
    return f'<span class="status {esc(css)}">{esc(value)}</span>'


def link(href: str, text: Any) -> str:
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def path(*parts: str, **query: Any) -> str:
    """A console URL from path parts (each quoted) and query parameters (empty ones left out)."""
    url = "/" + "/".join(quote(p, safe="") for p in parts)
    args = {k: v for k, v in query.items() if v not in ("", None)}
    return url + ("?" + urlencode(args) if args else "")


def table(headers: list[str], rows: list[list[str]], empty: str = "nothing to show",
          css: str = "") -> str:
    """A table whose cells are HTML already (escape values with ``esc``)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not rows:
        body = f'<tr><td class="empty" colspan="{len(headers)}">{esc(empty)}</td></tr>'
    return f'<table class="{esc(css)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def facts(items: list[tuple[str, str]]) -> str:
    """A definition list; values are HTML already."""
    return ('<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in items)
            + "</dl>")


def pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


def pretty_json(data: Any) -> str:
    return pre(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def select(name: str, options: tuple[str, ...], chosen: str, blank: str | None = "any") -> str:
    """A drop-down list; ``blank`` labels the empty choice (None: no empty choice)."""
    items = ([] if blank is None else [f'<option value="">{esc(blank)}</option>']) + [
        f'<option value="{esc(o)}"{" selected" if o == chosen else ""}>{esc(o)}</option>'
        for o in options]
    return f'<select name="{esc(name)}">{"".join(items)}</select>'


def post_button(action: str, label: str, confirm: str = "", css: str = "",
                fields: dict[str, str] | None = None) -> str:
    """A button that POSTs to ``action`` (the console's writes; no JavaScript needed)."""
    hidden = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">'
                     for k, v in (fields or {}).items())
    ask = f' data-confirm="{esc(confirm)}"' if confirm else ""
    return (f'<form class="inline" method="post" action="{esc(action)}"{ask}>{hidden}'
            f'<button type="submit" class="{esc(css)}">{esc(label)}</button></form>')


def page(title: str, content: str, current: str, notice: str = "", error: bool = False,
         status_code: int = 200, server: str = "") -> web.Response:
    nav = "".join(f'<a href="{href}"{" class=current" if href == current else ""}>{label}</a>'
                  for href, label in NAV)
    note = (f'<p class="notice{" error" if error else ""}" role="status">{esc(notice)}</p>'
            if notice else "")
    text = template("layout.html").substitute(
        title=esc(title), nav=nav, notice=note, content=content,
        server=esc(f"{server} · v{__version__}" if server else f"v{__version__}"))
    return web.Response(text=text, content_type="text/html", status=status_code)
