"""The web console: a single-page app built from console/ (scripts/build-console) into static/, served at
/console/ without Node. index.html is revalidated on every load; the assets have content-hashed names,
so browsers may keep them for a year. The page calls the public HTTP API with the user's API key; this
module serves files only and needs no authentication.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

PREFIX = "/console"
INDEX = "index.html"
ASSETS = "assets"
#: Content-hashed names never change content.
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
#: Everything from this origin only: the bundle has no inline script or style and loads nothing external.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str


def _load(entry: Traversable, name: str) -> StaticFile:
    body = entry.read_bytes()
    suffix = name[name.rfind(".") :] if "." in name else ""
    media_type = _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    if media_type == "text/html":
        media_type = "text/html; charset=utf-8"
    return StaticFile(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


def load_files(root: Traversable | None = None) -> dict[str, StaticFile]:
    """index.html and every file under assets/, by their path below static/."""
    root = root or resources.files(__name__) / "static"
    files: dict[str, StaticFile] = {}
    if not root.is_dir():
        return files
    index = root / INDEX
    if index.is_file():
        files[INDEX] = _load(index, INDEX)
    assets = root / ASSETS
    if assets.is_dir():
        for entry in assets.iterdir():
            if entry.is_file():
                files[f"{ASSETS}/{entry.name}"] = _load(entry, entry.name)
    return files


class Console:
    """The console's routes over files loaded once (the bundle is a few tens of kilobytes)."""

    def __init__(self, files: dict[str, StaticFile] | None = None) -> None:
        self.files = load_files() if files is None else files

    def routes(self) -> list[BaseRoute]:
        return [
            Route(PREFIX, self.redirect, methods=["GET"]),
            Route(PREFIX + "/{path:path}", self.serve, methods=["GET"]),
        ]

    async def redirect(self, request: Request) -> Response:
        query = request.url.query
        return RedirectResponse(PREFIX + "/" + (f"?{query}" if query else ""), status_code=308)

    async def serve(self, request: Request) -> Response:
        path: str = request.path_params["path"]
        name = INDEX if path in ("", INDEX) else path
        found = self.files.get(name)
        if found is None or (name != INDEX and not name.startswith(ASSETS + "/")):
            if name == INDEX:
                return PlainTextResponse("the console is not built: run scripts/build-console", 503)
            return PlainTextResponse("not found", 404)
        headers = {
            "Cache-Control": REVALIDATE if name == INDEX else IMMUTABLE,
            "ETag": found.etag,
            "X-Content-Type-Options": "nosniff",
        }
        if name == INDEX:
            headers |= {"Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer"}
        if found.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(found.body, media_type=found.media_type, headers=headers)


def console_routes() -> list[BaseRoute]:
    return Console().routes()
