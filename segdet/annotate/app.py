"""The HTTP side of ``segdet annotate``: a FastAPI app over the annotations (``store``), the click model
(``engine``) and training (``training``). JSON in image pixels; the OpenAPI description is at ``/docs``.

Every failure is an HTTP answer with one line in ``detail``, never a crash of the server: unknown ids and paths
404, malformed or out-of-range bodies 4xx (``422``; too large ``413``), a stale edit 409, a failed write 507
naming the file (which keeps its previous content). With a token, every ``/api`` call must carry it
(``Authorization: Bearer T``, or ``?token=T``) or gets 401; the page and its static files carry no data.
"""
from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Annotated, Literal, Union

from fastapi import Body, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from segdet.annotate.store import Conflict, Invalid, NotFound
from segdet.annotate.training import Busy
from segdet.data.io import BadSample
from segdet.errors import SegdetError, WriteFailed

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"

Num = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Label = Literal[0, 1]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SegmentBody(Strict):
    points: list[tuple[Num, Num, Label]] = Field(default_factory=list, max_length=256,
                                                 description="[x, y, 1 (object) | 0 (background)]")
    boxes: list[tuple[Num, Num, Num, Num]] = Field(default_factory=list, max_length=64,
                                                   description="[x1, y1, x2, y2], continuous pixels")
    multimask: bool = Field(False, strict=True)


class ProposeBody(Strict):
    max_masks: int = Field(32, ge=1, le=256, strict=True)


class RLE(BaseModel):
    size: tuple[Annotated[int, Field(strict=True, ge=1)], Annotated[int, Field(strict=True, ge=1)]]
    counts: Union[Annotated[str, Field(strict=True)], list[Annotated[int, Field(strict=True, ge=0)]]]


class ObjectBody(Strict):
    segmentation: RLE
    category: str | None = Field(None, min_length=1, max_length=200)


class ObjectEdit(Strict):
    segmentation: RLE | None = None
    category: str | None = Field(None, min_length=1, max_length=200)
    version: int | None = Field(None, strict=True, description="the version edited; or the If-Match header")


class TrainBody(Strict):
    overrides: list[Annotated[str, Field(max_length=500)]] = Field(default_factory=list, max_length=64)


def _version(if_match: str | None, body_version: int | None) -> int | None:
    if body_version is not None:
        return body_version
    if if_match is None or if_match.strip() == "*":
        return None
    try:
        return int(if_match.strip().removeprefix("W/").strip('"'))
    except ValueError:
        raise Invalid(f"If-Match '{if_match[:40]}' is not an object version") from None


STATUS = ((NotFound, 404), (Conflict, 409), (Busy, 409), (WriteFailed, 507), (Invalid, 422), (SegdetError, 422))


class Guard:
    """Plain ASGI middleware: the token on ``/api`` and a bound on request bodies (413)."""

    def __init__(self, app, token: str | None, max_body: int):
        self.app, self.token, self.max_body = app, token, int(max_body)

    def _authorised(self, scope) -> bool:
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"").decode("latin-1")
        if given.startswith("Bearer "):
            return secrets.compare_digest(given[7:].strip().encode(), self.token.encode())
        from urllib.parse import parse_qs

        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        return secrets.compare_digest(query.encode(), self.token.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.token and scope["path"].startswith("/api") and not self._authorised(scope):
            return await JSONResponse({"detail": "missing or wrong token (open the URL the server printed)"},
                                      401)(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return await _too_large(self.max_body)(scope, receive, send)
        state = {"seen": 0, "over": False, "answered": False}

        async def bounded():
            message = await receive()
            state["seen"] += len(message.get("body", b""))
            if state["seen"] > self.max_body:
                state["over"] = True
                raise _BodyTooLarge
            return message

        async def answer(message):
            """Once the body is found too large, whatever the app answers (its body parser turns the exception
            into a 400) is replaced by the 413."""
            if not state["over"]:
                return await send(message)
            if not state["answered"]:
                state["answered"] = True
                await _too_large(self.max_body)(scope, receive, send)
        try:
            await self.app(scope, bounded, answer)
        except _BodyTooLarge:
            if not state["answered"]:
                state["answered"] = True
                await _too_large(self.max_body)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"request body larger than {limit} bytes"}, 413)


def _json_error(doc, error: dict) -> str:
    """``invalid JSON at byte N: <the parser's reason>``; N counts bytes of the UTF-8 body, where the parser counts
    characters."""
    loc = error.get("loc") or ()
    at = loc[-1] if loc and isinstance(loc[-1], int) else None
    if at is not None and isinstance(doc, str):
        at = len(doc[:at].encode("utf-8", "surrogatepass"))
    why = (error.get("ctx") or {}).get("error")
    return "invalid JSON" + (f" at byte {at}" if at is not None else "") + (f": {why}" if why else "")


def create_app(store, engine, trainer, *, token: str | None, max_body: int, stacks=None) -> FastAPI:
    """The app over ``store``, ``engine`` and ``trainer`` (None: training is off); ``token``: required on ``/api``
    (None: none); ``max_body``: the largest request body in bytes; ``stacks``: ``stacks.Stacks`` (stack=true)."""
    app = FastAPI(title="segdet annotate", description=__doc__.split("\n\n")[0])

    for kind, code in STATUS:
        def handler(request: Request, exc: Exception, code=code):
            return JSONResponse({"detail": str(exc)}, code)
        app.add_exception_handler(kind, handler)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError):
        """One line naming where each problem is (the input itself is left out: it may be huge, or NaN)."""
        errors = exc.errors()
        if errors and errors[0].get("type") == "json_invalid":  # FastAPI names the character; say the byte
            return JSONResponse({"detail": _json_error(exc.body, errors[0])}, 422)
        where = [f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
                 for e in errors[:3]]
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return JSONResponse({"detail": "; ".join(where) + more}, 422)

    @app.exception_handler(BadSample)
    def unreadable(request: Request, exc: BadSample):
        return JSONResponse({"detail": str(exc)}, 422)

    @app.exception_handler(Exception)
    def unexpected(request: Request, exc: Exception):
        log.exception("annotate: %s %s failed", request.method, request.url.path)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return JSONResponse({"detail": f"{type(exc).__name__}: {first}"[:300]}, 500)

    # --- the page --------------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def page():
        index = STATIC / "index.html"
        if index.is_file():
            return FileResponse(index, media_type="text/html")
        return PlainTextResponse("segdet annotate: the page is not installed; the API is at /docs")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        files = {p.name: p for p in STATIC.iterdir() if p.is_file()} if STATIC.is_dir() else {}
        if name not in files:
            raise NotFound(f"no static file {name}")
        return FileResponse(files[name])

    # --- images ------------------------------------------------------------------------------------------------
    @app.get("/api/images", summary="every image: id, file name, size, objects (count), done")
    def images():
        return stacks.images() if stacks is not None else store.images()

    @app.get("/api/categories", summary="the category names objects take")
    def categories():
        return store.categories()

    @app.get("/api/images/{image_id}/image", summary="the image's bytes")
    def image(image_id: str):
        path = store.image_path(image_id)
        engine.prefetch_after(image_id)
        return FileResponse(path)

    @app.post("/api/images/{image_id}/segment", summary="mask of one object from points and boxes")
    def segment(image_id: str, body: SegmentBody):
        store.image(image_id)
        out = engine.segment(image_id, [list(p) for p in body.points], [list(b) for b in body.boxes],
                             body.multimask)
        engine.prefetch_after(image_id)
        return out

    @app.post("/api/images/{image_id}/propose", summary="candidate objects (detector boxes through SAM, or segment-everything: amg.*)")
    def propose(image_id: str, body: ProposeBody = Body(default_factory=ProposeBody)):
        store.image(image_id)
        return engine.propose(image_id, body.max_masks)

    # --- objects -----------------------------------------------------------------------------------------------
    @app.get("/api/images/{image_id}/objects", summary="the image's objects (RLE, category, version)")
    def objects(image_id: str):
        return store.objects(image_id)

    @app.post("/api/images/{image_id}/objects", summary="add an object; answers once it is on disk")
    def add(image_id: str, body: ObjectBody):
        a = store.add(image_id, body.segmentation.model_dump(), body.category)
        return {"id": a["id"], "version": a["version"], "category": a["category"]}

    @app.put("/api/images/{image_id}/objects/{oid}", summary="edit an object (its version: body or If-Match)")
    def edit(image_id: str, oid: str, body: ObjectEdit, if_match: str | None = Header(None)):
        a = store.update(image_id, oid, _version(if_match, body.version),
                         body.segmentation.model_dump() if body.segmentation else None, body.category)
        return {"id": a["id"], "version": a["version"], "category": a["category"]}

    @app.delete("/api/images/{image_id}/objects/{oid}", summary="delete an object (If-Match: its version)")
    def delete(image_id: str, oid: str, if_match: str | None = Header(None)):
        return {"deleted": store.delete(image_id, oid, _version(if_match, None))}

    @app.post("/api/export", summary="write DIR/masks/<stem>.png (the union of each image's objects)")
    def export():
        return store.export_masks()

    # --- training ----------------------------------------------------------------------------------------------
    @app.post("/api/train", summary="start segdet train on the annotations as they stand")
    def train(body: TrainBody = Body(default_factory=TrainBody)):
        if trainer is None:
            raise Invalid("training is off for this server")
        return trainer.start(body.overrides)

    @app.get("/api/train", summary="state, epoch, metrics, checkpoint, the model in use")
    def train_status():
        if trainer is None:
            return {"state": "idle", "epoch": None, "max_epochs": None, "metrics": {}, "checkpoint": None,
                    "error": None, "run_dir": None, "model": engine.loaded.name}
        return trainer.status()

    from segdet.annotate.stacks import add_routes

    add_routes(app, stacks, engine)
    app.add_middleware(Guard, token=token, max_body=max_body)
    return app
