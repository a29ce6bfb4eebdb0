"""The HTML the app serves, with the Content-Security-Policy each page needs and nothing more.

The page (app/static/index.html) runs only its own inline script and style, allowed by their sha256 hashes
(computed here from the file, so editing the page cannot leave a stale hash), and talks only to this origin.
/docs and /redoc (only with COLA_EXPOSE_DOCS=1) load Swagger UI and ReDoc from jsDelivr at exact versions with
Subresource Integrity: a changed file on the CDN is refused by the browser instead of run.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

PAGE = Path(__file__).with_name("static") / "index.html"
DOCS_LINK = ' · <small><a href="docs">API docs</a></small>'  # left out of the page when the docs are off
# Every HTML answer: never framed (clickjacking), no base-URI or form-target tricks.
FRAMING = "frame-ancestors 'none'; base-uri 'none'"
HTML_HEADERS = {"x-frame-options": "DENY"}  # for browsers older than CSP's frame-ancestors

# Exact versions and their sha384 (computed from the npm tarballs, which jsDelivr serves byte for byte:
# `npm pack swagger-ui-dist@5.35.0 redoc@2.5.4`, then `openssl dgst -sha384 -binary FILE | base64`).
CDN = "https://cdn.jsdelivr.net/npm"
SWAGGER_JS = (f"{CDN}/swagger-ui-dist@5.35.0/swagger-ui-bundle.js",
              "sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9")  # fmt: skip
SWAGGER_CSS = (f"{CDN}/swagger-ui-dist@5.35.0/swagger-ui.css",
               "sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I")  # fmt: skip
REDOC_JS = (f"{CDN}/redoc@2.5.4/bundles/redoc.standalone.js",
            "sha384-w447zOpYfw/1Tv/5AK9NfHTlQIqE3RVR6KY62jCyy9zNDgO64cMwGGP1Fj0zJVf5")  # fmt: skip
SWAGGER_INIT = (
    'SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui", layout: "BaseLayout", deepLinking: true, '
    "presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset]});"
)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _inline(html: str, tag: str) -> list[str]:
    return re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)


def page(expose_docs: bool) -> tuple[str, dict[str, str]]:
    """The page's HTML and headers."""
    html = PAGE.read_text()
    if not expose_docs:
        html = html.replace(DOCS_LINK, "")
    scripts = " ".join(map(_sha256, _inline(html, "script")))
    styles = " ".join(map(_sha256, _inline(html, "style")))
    policy = (
        f"default-src 'none'; script-src {scripts}; style-src {styles}; connect-src 'self'; img-src 'self'; "
        f"form-action 'self'; {FRAMING}"
    )
    return html, {"content-security-policy": policy, **HTML_HEADERS}


def _tag(kind: str, url_and_hash: tuple[str, str]) -> str:
    url, integrity = url_and_hash
    if kind == "css":
        return f'<link rel="stylesheet" href="{url}" integrity="{integrity}" crossorigin="anonymous">'
    return f'<script src="{url}" integrity="{integrity}" crossorigin="anonymous"></script>'


def swagger_ui(title: str) -> tuple[str, dict[str, str]]:
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title} - Swagger UI</title>'
        f'{_tag("css", SWAGGER_CSS)}</head><body><div id="swagger-ui"></div>{_tag("js", SWAGGER_JS)}'
        f"<script>{SWAGGER_INIT}</script></body></html>"
    )
    # Swagger UI sets style attributes and draws icons from data: URIs.
    policy = (
        f"default-src 'none'; script-src {CDN}/ {_sha256(SWAGGER_INIT)}; style-src {CDN}/ 'unsafe-inline'; "
        f"img-src 'self' data:; connect-src 'self'; {FRAMING}"
    )
    return html, {"content-security-policy": policy, **HTML_HEADERS}


def redoc(title: str) -> tuple[str, dict[str, str]]:
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title} - ReDoc</title></head>'
        f'<body><redoc spec-url="openapi.json"></redoc>{_tag("js", REDOC_JS)}</body></html>'
    )
    # ReDoc injects its styles (styled-components) and runs its search in a blob: worker; no third-party fonts.
    policy = (
        f"default-src 'none'; script-src {CDN}/; style-src 'unsafe-inline'; img-src 'self' data:; "
        f"connect-src 'self'; worker-src blob:; {FRAMING}"
    )
    return html, {"content-security-policy": policy, **HTML_HEADERS}
