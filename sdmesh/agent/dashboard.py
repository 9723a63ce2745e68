"""The web dashboard every agent serves, and the pool templates its form is built from.

``/`` and ``/ui/`` serve a static page (sdmesh/agent/web/: no build step, nothing fetched
from elsewhere, so it works on offline machines) that talks to this agent's JSON API like the
CLI does. ``/v1/templates`` turns the tutorial's pools (descriptors/templates/*.sf) into forms:
users fill in a few fields and the agent fills up the rest and writes the descriptor (seed
001). Parsing and rendering are sdmesh.pools.templates; this module only does the I/O.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sdmesh.pools.templates import (
    POOL_FIELD_NAME,
    Template,
    TemplateError,
    TemplateFormatError,
    fill,
    parse_template,
    render,
)

if TYPE_CHECKING:
    from sdmesh.pools.records import PoolSpec

log = logging.getLogger(__name__)

#: ``resolve_submission`` of sdmesh.agent.api: a submission's body -> its spec.
ResolveSubmission = Callable[[Mapping[str, Any], str], Awaitable["PoolSpec"]]
#: ``authorize_submission`` of sdmesh.agent.api: 403 unless the caller may submit it; the
#: operator signature envelope to keep with the pool.
CheckSubmission = Callable[[web.Request, "PoolSpec", Mapping[str, Any]], bytes]
SUBMISSION_KEY = web.AppKey("sdmesh_submission", tuple)

WEB_DIR = Path(__file__).resolve().parent / "web"
STATIC = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
# The page needs nothing from elsewhere; saying so keeps injected markup from loading any.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def templates_dir() -> Path:
    """Next to the built-in library, which is found the same way (``$SDMESH_LIBRARY``...)."""
    from sdmesh.language.library import library_dir

    return library_dir() / "templates"


@functools.lru_cache(maxsize=4)
def load_templates(directory: Path) -> dict[str, Template]:
    """Every template in ``directory``, by file stem; a broken one is logged and left out so
    the others stay usable (the unit tests keep the built-in ones valid)."""
    found: dict[str, Template] = {}
    for path in sorted(directory.glob("*.sf")) if directory.is_dir() else []:
        try:
            found[path.stem] = parse_template(path.stem, path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, TemplateFormatError) as error:
            log.error("template %s left out: %s", path, error)
    return found


def builtin_templates() -> dict[str, Template]:
    return load_templates(templates_dir())


# ------------------------------------------------------------------------------ page
async def root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/ui/")


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("file") or "index.html"
    if name not in STATIC:
        raise web.HTTPNotFound(text="no such file")
    content_type = f"{STATIC[name]}; charset=utf-8"
    return web.FileResponse(WEB_DIR / name, headers={**HEADERS, "Content-Type": content_type})


# ------------------------------------------------------------------------- templates
def _template(request: web.Request) -> Template:
    name = request.match_info["name"]
    template = builtin_templates().get(name)
    if template is None:
        raise web.HTTPNotFound(
            text=f"no template {name!r}; GET /v1/templates lists them",
        )
    return template


def _bad_request(message: str, fields: dict[str, str] | None = None) -> web.HTTPBadRequest:
    """JSON, unlike the other API errors, so the form can mark each field at fault."""
    body: dict[str, object] = {"error": message}
    if fields:
        body["fields"] = fields
    return web.HTTPBadRequest(text=json.dumps(body), content_type="application/json")


async def list_templates(request: web.Request) -> web.Response:
    return web.json_response([t.to_json() for t in builtin_templates().values()])


async def show_template(request: web.Request) -> web.Response:
    template = _template(request)
    return web.json_response({**template.to_json(), "descriptor": render_defaults(template)})


def render_defaults(template: Template) -> str:
    return render(template, fill(template, {}))


async def submit_template(request: web.Request) -> web.Response:
    """``{"fields": {...}, "name"?, "dry_run"?}``: fill, render, then submit the descriptor
    exactly as ``POST /v1/pools`` would; the answer carries the descriptor it rendered."""
    from sdmesh.agent.api_context import failed as _failed
    from sdmesh.agent.api_context import pool_service as _pools
    from sdmesh.agent.api_input import BadInput, json_object
    from sdmesh.agent.pools import PoolError
    from sdmesh.pools.records import check_pool_id
    from sdmesh.pools.submission import default_pool_name

    template = _template(request)
    service = _pools(request)
    try:
        body = await json_object(request)  # an object, any depth, valid Unicode throughout
    except BadInput as error:
        raise _bad_request(str(error)) from None
    try:
        values = fill(template, body.get("fields"))
    except TemplateError as error:
        raise _bad_request(str(error), error.errors) from None
    given, named = body.get("name"), values.get(POOL_FIELD_NAME)
    if given not in (None, "") and named not in (None, "") and given != named:
        raise _bad_request("'name' and the field 'name' differ", {"name": "differs from 'name'"})
    pool = given or named or default_pool_name(template.name)
    try:
        if not isinstance(pool, str):
            raise ValueError("the pool name must be a string")
        check_pool_id(pool)
    except ValueError as error:
        raise _bad_request(str(error), {POOL_FIELD_NAME: str(error)}) from None
    descriptor = render(template, values)
    resolve_submission, authorize_submission = request.app[SUBMISSION_KEY]
    try:  # in a worker thread, as POST /v1/pools
        spec = await resolve_submission({"descriptor": descriptor, "name": pool}, service.name)
    except web.HTTPBadRequest as error:  # a template bug: the unit tests render every one
        raise _bad_request(error.text or "the descriptor does not resolve") from None
    # A template carries no signature: the agent signs with its own key, if it has one.
    signature = authorize_submission(request, spec, {})
    try:
        if body.get("dry_run"):
            result = service.dry_run(spec)
            return web.json_response({**result, "descriptor": descriptor})
        result = await service.submit(spec, signature)
    except PoolError as error:
        raise _failed(error) from None
    return web.json_response({**result, "descriptor": descriptor}, status=201)


def add_routes(app: web.Application, resolve: ResolveSubmission, check: CheckSubmission) -> None:
    """The page at ``/`` and ``/ui/``, and the templates API; build_app calls this with the
    way ``POST /v1/pools`` resolves a submission and checks the caller's role for it (given,
    not imported: the API module imports this one)."""
    app[SUBMISSION_KEY] = (resolve, check)
    app.router.add_get("/", root)
    app.router.add_get("/ui", root)
    app.router.add_get("/ui/", static)
    app.router.add_get("/ui/{file}", static)
    app.router.add_get("/v1/templates", list_templates)
    app.router.add_get("/v1/templates/{name}", show_template)
    app.router.add_post("/v1/templates/{name}", submit_template)
