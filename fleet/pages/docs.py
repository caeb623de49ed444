"""The OpenAPI docs (Swagger UI at ``/docs``) from the fleet's own vendored assets: they work
in a plant room with no uplink. (ReDoc is not offered: its bundle fetches its logo from the
vendor's CDN.)"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from fleet.pages.templating import VENDORED

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} — API",
        swagger_js_url=VENDORED["swagger-ui-js"],
        swagger_css_url=VENDORED["swagger-ui-css"],
        swagger_favicon_url="/static/favicon.svg",
    )
