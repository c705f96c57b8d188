"""The HTTP API (FastAPI) and the web page, over :class:`whyrec.serve.service.RecService`.

``create_app(settings)`` loads the run and opens the store at once (so a bad run or
store fails before anything listens); background work starts with the app's lifespan.
Interactive API documentation: ``/docs`` (OpenAPI at ``/openapi.json``).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import AfterValidator

from whyrec import __version__
from whyrec.data.ids import ID_PATTERN, MAX_ID_LENGTH, check_id
from whyrec.errors import WhyrecError
from whyrec.safety import echo_text
from whyrec.serve.guard import MAX_MESSAGE, BodyGuard, error_response, safe_errors
from whyrec.serve.schemas import (
    ExplainBody,
    ExplanationOut,
    HealthOut,
    HistoryOut,
    InteractionsBody,
    InteractionsOut,
    ItemsOut,
    PreferencesOut,
    ReadyOut,
    RecommendationsOut,
    RecommendBody,
    UsersOut,
)
from whyrec.serve.service import InvalidInput, NotFound, RecService
from whyrec.serve.settings import ServeSettings
from whyrec.serve.store import StoreUnavailable

STATIC = FsPath(__file__).parent / "static"
JSON = "application/json"
# A user id in a path: the same rule as in bodies and in `whyrec data prepare`
# (whyrec.data.ids); the route's "{user:path}" lets an id hold "/", sent as %2F or as it is.
USER = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        description="Source user id (URL-encoded; '/' may be sent as %2F).",
        json_schema_extra={"pattern": ID_PATTERN},
    ),
    AfterValidator(check_id),
]
# Consistency tokens (the 'token' of write replies): up to 16, comma-separated.
TOKENS = r"^[0-9]{1,18}(,[0-9]{1,18}){0,15}$"
TOKEN_HEADER = "X-Whyrec-Token"
# The page loads only its own files; nothing inline, nothing from elsewhere.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

DESCRIPTION = """
Recommendations from a trained whyrec run, with reasons on demand.

* The recommendation path never waits for the LLM.
* With `explain=true` each item carries its reason, LANE's preference weights and the
  item's attribution. A reason comes from the cache, from the LLM within the time budget,
  or is the grounded template reason (`reason_source: "template"`, `pending: true`) while
  the LLM writes its version in the background.
* `/v1/*` needs `Authorization: Bearer <key>` when API keys are configured.
"""


def create_app(settings: ServeSettings | None = None, *, llm_client: Any = None) -> FastAPI:
    """The FastAPI application for ``settings`` (default: from env / config file).

    ``llm_client`` replaces the client built from the LLM settings (any object with
    ``complete``/``complete_many``/``model``/``backend``, e.g. an ``LLMClient``).
    """
    settings = settings if settings is not None else ServeSettings.load()
    service = RecService(settings, llm_client=llm_client)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        await service.start_async()
        _freeze_long_lived()
        try:
            yield
        finally:
            await service.stop_async()
            service.close()

    app = FastAPI(
        title="whyrec",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.settings = settings
    # every request body: size limit (413), JSON only (415), strict JSON (422 naming the field)
    app.add_middleware(BodyGuard, max_body_bytes=settings.max_body_bytes)
    _add_error_handlers(app)
    access = _Access(settings)
    _add_open_routes(app, service, access)
    _add_recommendation_routes(app, service, access)
    _add_user_routes(app, service, access)
    _add_explanation_routes(app, service, access)
    _document_errors(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Error replies are small and always encodable: messages capped, inputs summarised."""

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": safe_errors(exc.errors())}, status_code=422)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return error_response(404, [], str(exc))

    @app.exception_handler(InvalidInput)
    async def _invalid(_: Request, exc: InvalidInput) -> JSONResponse:
        return error_response(422, exc.loc, str(exc))

    @app.exception_handler(StoreUnavailable)
    async def _store_down(_: Request, exc: StoreUnavailable) -> JSONResponse:
        # the details (host, driver message) are in the service's log, not the reply
        return JSONResponse(
            {"detail": echo_text(str(exc), MAX_MESSAGE)},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(WhyrecError)
    async def _whyrec(_: Request, exc: WhyrecError) -> JSONResponse:
        return error_response(422, [], str(exc))  # the documented 422 shape (a list)


def read_after(
    after: str | None = Query(
        None,
        pattern=TOKENS,
        description="Consistency tokens of your writes (their replies' 'token'), "
        "comma-separated: the answer includes those writes on any replica.",
    ),
    x_whyrec_after: str | None = Header(
        None, pattern=TOKENS, description="The same as the 'after' query parameter."
    ),
) -> tuple[int, ...]:
    """The consistency tokens a read names, from the query or the header."""
    return tuple(int(t) for v in (after, x_whyrec_after) if v for t in v.split(","))


class _Access:
    """What the routes share: the API-key check (``guard``: none when no key is
    configured), the consistency tokens of a read (``after``) and the ``k`` query."""

    def __init__(self, settings: ServeSettings) -> None:
        self.keys = [k.encode("utf-8") for k in settings.keys()]
        self.bearer = HTTPBearer(auto_error=False, description="One of the configured API keys.")
        bearer = self.bearer

        async def require_key(
            creds: HTTPAuthorizationCredentials | None = Depends(bearer),
        ) -> None:
            if not self.key_ok(creds):
                raise HTTPException(
                    status_code=401,
                    detail="missing or invalid API key: send 'Authorization: Bearer <key>'",
                    headers={"WWW-Authenticate": "Bearer"},
                )

        self.guard = [Depends(require_key)] if self.keys else []
        self.after = Depends(read_after)
        self.k_query = Query(
            settings.k_default, ge=1, le=settings.k_max, description=f"1..{settings.k_max}"
        )

    def key_ok(self, creds: HTTPAuthorizationCredentials | None) -> bool:
        """A configured key was sent (always False when authentication is off)."""
        given = creds.credentials.encode("utf-8") if creds is not None else b""
        # compare with every key so the time taken does not say which one nearly matched
        ok = False
        for key in self.keys:
            ok |= hmac.compare_digest(given, key)
        return ok


def _add_open_routes(app: FastAPI, service: RecService, access: _Access) -> None:
    """Health, readiness and the web page: never behind the API key."""
    # the key is optional here (it only adds detail): say so in the schema ({} = no auth)
    optional_key = {"security": [{}, {"HTTPBearer": []}]}

    @app.get("/health", response_model=HealthOut, tags=["service"], openapi_extra=optional_key)
    async def health(
        creds: HTTPAuthorizationCredentials | None = Depends(access.bearer),
    ) -> dict[str, Any]:
        """Liveness and state: model, store, LLM (never needs a key). File paths and the
        LLM's last error are shown only to a caller that sends a valid API key."""
        return service.health(detail=access.key_ok(creds))

    @app.get(
        "/ready",
        response_model=ReadyOut,
        responses={503: {"model": ReadyOut, "description": "Not ready: send no traffic."}},
        tags=["service"],
    )
    async def ready() -> JSONResponse:
        """Readiness for a load balancer (never needs a key): 200 when this replica can
        take writes, 503 with ``Retry-After`` while its store cannot be reached (it still
        answers recommendations from what it last saw, marked ``stale``)."""
        reasons = service.degraded()
        if reasons:
            return JSONResponse(
                {"ready": False, "reasons": reasons},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        return JSONResponse({"ready": True, "reasons": []})

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def _add_recommendation_routes(app: FastAPI, service: RecService, access: _Access) -> None:
    @app.get(
        "/v1/users/{user:path}/recommendations",
        response_model=RecommendationsOut,
        dependencies=access.guard,
        tags=["recommendations"],
    )
    async def user_recommendations(
        user: USER,
        k: int = access.k_query,
        explain: bool = Query(False, description="Attach reasons, weights and attribution."),
        after: tuple[int, ...] = access.after,
    ) -> Response:
        """Top-k for a user (from training data or created through /v1/interactions)."""
        body = await service.user_recommendations(user, k, explain, after)
        return Response(body, media_type=JSON)

    @app.post(
        "/v1/recommendations",
        response_model=RecommendationsOut,
        dependencies=access.guard,
        tags=["recommendations"],
    )
    async def history_recommendations(body: RecommendBody) -> Response:
        """Top-k for an explicit history (item ids or titles) — users the model has not seen."""
        out = await service.history_recommendations(
            body.item_ids, body.titles, body.k, body.explain, body.wait_s
        )
        return Response(out, media_type=JSON)


def _add_user_routes(app: FastAPI, service: RecService, access: _Access) -> None:
    @app.get(
        "/v1/users/{user:path}/preferences",
        response_model=PreferencesOut,
        dependencies=access.guard,
        tags=["users"],
    )
    async def user_preferences(user: USER, after: tuple[int, ...] = access.after) -> dict[str, Any]:
        """The user's preferences with LANE's weights (empty for non-LANE models)."""
        return await service.user_preferences(user, after)

    @app.get(
        "/v1/users/{user:path}/history",
        response_model=HistoryOut,
        dependencies=access.guard,
        tags=["users"],
    )
    async def user_history(
        user: USER,
        limit: int = Query(20, ge=1, le=1000, description="Most recent N."),
        after: tuple[int, ...] = access.after,
    ) -> dict[str, Any]:
        """The user's most recent items, newest first (training data and posted ones)."""
        return await service.user_history(user, limit, after)

    @app.get("/v1/users", response_model=UsersOut, dependencies=access.guard, tags=["users"])
    async def users(
        offset: int = Query(0, ge=0),
        limit: int = Query(50, ge=1, le=1000),
        after: tuple[int, ...] = access.after,
    ) -> dict[str, Any]:
        """User ids the service knows: the model's, then those created through the API."""
        return await service.users(offset, limit, after)

    @app.get("/v1/items", response_model=ItemsOut, dependencies=access.guard, tags=["items"])
    async def items(
        q: str = Query(..., min_length=1, max_length=200, description="Title words or an id."),
        limit: int = Query(10, ge=1, le=50),
    ) -> dict[str, Any]:
        """Catalogue search by title (fuzzy) or exact item id."""
        return await service.search_items(q, limit)


def _add_explanation_routes(app: FastAPI, service: RecService, access: _Access) -> None:
    @app.post(
        "/v1/explanations",
        response_model=ExplanationOut,
        dependencies=access.guard,
        tags=["explanations"],
    )
    async def explanations(
        body: ExplainBody, after: tuple[int, ...] = access.after
    ) -> dict[str, Any]:
        """Explain one item for a user or a history — also one another recommender chose."""
        return await service.explain(body, after)

    @app.post(
        "/v1/interactions",
        response_model=InteractionsOut,
        dependencies=access.guard,
        tags=["users"],
    )
    async def interactions(body: InteractionsBody, response: Response) -> dict[str, Any]:
        """Append interactions (oldest first); stored durably before the reply, used next.
        The reply's ``token`` (also the X-Whyrec-Token header), sent back with later reads
        (X-Whyrec-After), makes every replica answer them with this write included."""
        out = await service.add_interactions(body.user, body.item_ids, body.titles)
        response.headers[TOKEN_HEADER] = out["token"]
        return out


#: Error replies every /v1 route may give besides its 200 and 422, and when.
_ERRORS = {
    "401": "No or a wrong API key (only when API keys are configured).",
    "503": "The store cannot be reached now; retry after the Retry-After header's seconds.",
}
_BODY_ERRORS = {
    "413": "The body is larger than max_body_bytes.",
    "415": "The body is not JSON (Content-Type application/json).",
}
_NOT_FOUND = "The user or an item (by id or title) is not known."
_ERROR_BODY = {
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"type": "string", "description": "What was wrong."}},
}


def _document_errors(app: FastAPI) -> None:
    """Add the error replies the guard, the key check, the store and the lookups give to
    the OpenAPI schema, so it documents every status a route can answer (schemathesis
    checks the app against it: tests/serve/test_schemathesis.py)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for path, operations in schema.get("paths", {}).items():
            if not path.startswith("/v1/"):
                continue
            for method, op in operations.items():
                errors = dict(_ERRORS)
                if method == "post":
                    errors.update(_BODY_ERRORS)
                if "{user}" in path or path in ("/v1/recommendations", "/v1/explanations"):
                    errors["404"] = _NOT_FOUND
                responses = op.setdefault("responses", {})
                for code, text in errors.items():
                    responses.setdefault(
                        code,
                        {"description": text, "content": {JSON: {"schema": _ERROR_BODY}}},
                    )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_env() -> Any:
    """Factory for ``uvicorn --factory whyrec.serve.app:app_from_env`` (settings from env)."""
    return create_app(ServeSettings.load())


__all__ = ["app_from_env", "create_app"]


def _freeze_long_lived() -> None:
    """Keep the garbage collector off what lives as long as the process (the model,
    catalogue, imported libraries): a full collection scanning them stalled every request
    in flight — p99 at 50 clients 160–190 ms with the collector, 39–45 ms without it
    (bench/serve_load.py, 2 cores, docs/benchmarks.md). Objects made later are collected
    as usual."""
    import gc

    gc.collect()
    gc.freeze()
