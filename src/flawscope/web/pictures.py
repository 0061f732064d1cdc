"""Routes that serve pictures: a part's image, its heat layer and thumbnail, and files of the image store.

Every path is resolved inside the image store (``..`` and links out are refused with 400). Pictures
of a record never change, so browsers may keep them; rendered ones are cached in memory.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from flawscope.data.imageio import read_image
from flawscope.line.store import read_map
from flawscope.web.auth import Principal, require
from flawscope.web.errors import PartNotFoundError
from flawscope.web.imaging import encode, fit, heat_rgba, inside_store, thumbnail, to_display
from flawscope.web.state import PartImage, WebState

router = APIRouter(include_in_schema=False)
SeqPath = Annotated[int, PathParam(ge=1, le=2**53 - 1)]
Operator = Annotated[Principal, Depends(require("operator"))]
KEEP = {"cache-control": "private, max-age=86400, immutable"}
BROWSER_FORMATS = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
SHOWN_SIDE = 1600


def _part(request: Request, seq: SeqPath) -> tuple[WebState, PartImage]:
    state: WebState = request.app.state.web
    record = state.record(seq)
    if record is None:
        raise PartNotFoundError("seq", f"there is no record {seq} in the audit log")
    image = state.image_of(record)
    if image.path is None:
        raise PartNotFoundError("image", f"record {seq}: {image.problem}")
    return state, image


@router.get("/parts/{seq}/image")
def part_image(request: Request, who: Operator, seq: SeqPath) -> Response:
    """The part's image, as stored when a browser shows that format, else converted to PNG."""
    state, image = _part(request, seq)
    assert image.path is not None
    media = BROWSER_FORMATS.get(image.path.suffix.lower())
    if media is not None:
        return FileResponse(image.path, media_type=media, headers=KEEP)
    path = image.path
    data = state.pictures.get(("image", seq), lambda: encode(to_display(read_image(path)), ".png"))
    return Response(data, media_type="image/png", headers=KEEP)


@router.get("/parts/{seq}/heat.png")
def part_heat(request: Request, who: Operator, seq: SeqPath) -> Response:
    """The kept anomaly map as a transparent heat layer the size of the shown image (404 when none)."""
    state, image = _part(request, seq)
    assert image.path is not None
    amap = read_map(image.path)
    if amap is None:
        raise PartNotFoundError("heatmap", f"no heatmap was kept for record {seq}")
    scale = min(1.0, SHOWN_SIDE / max(image.width, image.height))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    data = state.pictures.get(("heat", seq), lambda: encode(heat_rgba(amap, size), ".png"))
    return Response(data, media_type="image/png", headers=KEEP)


@router.get("/parts/{seq}/thumb.jpg")
def part_thumb(request: Request, who: Operator, seq: SeqPath) -> Response:
    """A small picture of the part with its heat layer, for the dashboard."""
    state, image = _part(request, seq)
    path = image.path
    assert path is not None
    data = state.pictures.get(("thumb", seq), lambda: thumbnail(path, read_map(path)))
    return Response(data, media_type="image/jpeg", headers=KEEP)


@router.get("/store/{path:path}")
def store_file(request: Request, who: Operator, path: str) -> Response:
    """A file of the image store (drawn masks, images), by its path inside the store."""
    state: WebState = request.app.state.web
    real = inside_store(state.store_root, path)
    if not real.is_file():
        raise PartNotFoundError(path[:200], "no such file in the image store")
    media = BROWSER_FORMATS.get(real.suffix.lower())
    if media is None:
        data = encode(fit(to_display(read_image(real)), SHOWN_SIDE), ".png")
        return Response(data, media_type="image/png")
    return FileResponse(real, media_type=media)
