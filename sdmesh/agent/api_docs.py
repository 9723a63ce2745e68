"""``GET /v1/openapi.yaml``: the API's hand-written OpenAPI 3.1 description, served as is.

The file ships inside the package (setup.cfg's package data) next to this module;
tests/unit/agent/test_openapi.py checks that it lists exactly the routes ``build_app`` serves.
"""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web

OPENAPI_FILE = "openapi.yaml"
#: RFC 9512's media type for YAML.
YAML_TYPE = "application/yaml"


@functools.cache
def openapi_text() -> bytes:
    """The description's bytes, read once: it cannot change while the agent runs."""
    return resources.files("sdmesh.agent").joinpath(OPENAPI_FILE).read_bytes()


async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=openapi_text(), content_type=YAML_TYPE, charset="utf-8")


__all__ = ["OPENAPI_FILE", "openapi_document", "openapi_text"]
