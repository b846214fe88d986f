"""What every console page shares: the layout with its notice, and where a write goes next."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from broker.admin import html as h


def page(request: web.Request, title: str, content: str, current: str,
         status_code: int = 200) -> web.Response:
    notice = request.query.get("notice", "")
    error = request.query.get("error", "")
    return h.page(title, content, current, notice=error or notice, error=bool(error),
                  status_code=status_code, server=request.host)


def back(to: str, notice: str = "", error: str = "") -> web.HTTPSeeOther:
    """Where a write sends the browser next, with what happened."""
    args = urlencode({k: v for k, v in (("notice", notice), ("error", error)) if v})
    return web.HTTPSeeOther(to + ("&" if "?" in to else "?") + args if args else to)


def return_to(request: web.Request, fields: dict[str, str], default: str) -> str:
    target = fields.get("return_to", "")
    return target if target.startswith("/") and not target.startswith("//") else default


def hhmm(value: str) -> str:
    digits = value.replace(":", "")
    return f"{digits[:2]}:{digits[2:4]}" if len(digits) >= 4 else value
