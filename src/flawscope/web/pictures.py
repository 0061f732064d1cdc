"""Routes that serve pictures: a part's image, its heat layer and thumbnail, and files of the image store.

Every path is resolved inside the image store (``..`` and links out are refused with 400). Pictures
of a record never change, so browsers may keep them; rendered ones are cached in memory.

A page shows a part at screen size: an image larger than :data:`DISPLAY_SIDE` is sent as a JPEG
of that size (``?full=1`` sends the stored image, for a closer look), and the heat layer is drawn
at most :data:`HEAT_SIDE` pixels wide and stretched by the browser over the picture (the map is
smooth: a larger layer shows nothing more, and a 5-megapixel part's layer took longer to encode
and send than the rest of its page).

The review page's pictures (the display image when it is converted, and the heat layer) are drawn
ahead of time by :class:`flawscope.web.prerender.Prerenderer` when a part enters the review queue
(:func:`prepare`), so the first view of a part is served from memory.
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
from flawscope.web.imaging import (
    DISPLAY_SIDE,
    encode,
    fit,
    heat_rgba,
    inside_store,
    thumbnail,
    to_display,
)
from flawscope.web.state import PartImage, WebState

router = APIRouter(include_in_schema=False)
SeqPath = Annotated[int, PathParam(ge=1, le=2**53 - 1)]
Operator = Annotated[Principal, Depends(require("operator"))]
KEEP = {"cache-control": "private, max-age=86400, immutable"}
BROWSER_FORMATS = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
SHOWN_SIDE = 1600  # files of the store converted for the browser
HEAT_SIDE = 512  # long side of a heat layer


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
def part_image(request: Request, who: Operator, seq: SeqPath, full: bool = False) -> Response:
    """The part's picture at display size (a JPEG when the stored image is larger); ``full``: as stored.

    The stored file is sent as it is when a browser shows its format and it is no larger than
    the display (or ``full`` is asked); otherwise it is converted (PNG at full size, JPEG at
    display size).
    """
    state, image = _part(request, seq)
    path = image.path
    assert path is not None
    media = BROWSER_FORMATS.get(path.suffix.lower())
    small = max(image.width, image.height) <= DISPLAY_SIDE
    if media is not None and (full or small):
        return FileResponse(path, media_type=media, headers=KEEP)
    if full:
        data = state.pictures.get(("full", seq), lambda: encode(to_display(read_image(path)), ".png"))
        return Response(data, media_type="image/png", headers=KEEP)
    return Response(_display(state, seq, image), media_type="image/jpeg", headers=KEEP)


def _display(state: WebState, seq: int, image: PartImage) -> bytes:
    """The picture a page shows of a stored image too large (or of a format) to send as it is."""
    path = image.path
    assert path is not None
    return state.review_pictures.get(
        ("image", seq), lambda: encode(fit(to_display(read_image(path)), DISPLAY_SIDE), ".jpg", 88)
    )


def _converted(image: PartImage) -> bool:
    """Whether a page's picture of this image is converted (else the stored file is sent)."""
    assert image.path is not None
    small = max(image.width, image.height) <= DISPLAY_SIDE
    return BROWSER_FORMATS.get(image.path.suffix.lower()) is None or not small


@router.get("/parts/{seq}/heat.png")
def part_heat(request: Request, who: Operator, seq: SeqPath) -> Response:
    """The kept anomaly map as a transparent heat layer with the image's proportions (404 when none)."""
    state, image = _part(request, seq)
    if not image.has_map:
        raise PartNotFoundError("heatmap", f"no heatmap was kept for record {seq}")
    return Response(_heat(state, seq, image), media_type="image/png", headers=KEEP)


def _heat(state: WebState, seq: int, image: PartImage) -> bytes:
    """The heat layer of a part whose map was kept (PNG, at most :data:`HEAT_SIDE` wide)."""
    path = image.path
    assert path is not None
    scale = min(1.0, HEAT_SIDE / max(image.width, image.height))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))

    def draw() -> bytes:
        amap = read_map(path)
        if amap is None:
            raise PartNotFoundError("heatmap", f"no heatmap was kept for record {seq}")
        return encode(heat_rgba(amap, size), ".png")

    return state.review_pictures.get(("heat", seq), draw)


def prepare(state: WebState, seq: int) -> int:
    """Draw the review page's pictures of record ``seq`` into the cache (nothing when already there).

    Returns:
        How many pictures were drawn (0: none needed, the part has no image, or they were cached).

    Raises:
        InputError: the image or its map cannot be read.
    """
    record = state.record(seq)
    if record is None:
        return 0
    image = state.image_of(record)
    if image.path is None:
        return 0
    drawn = 0
    if _converted(image) and not state.review_pictures.has(("image", seq)):
        _display(state, seq, image)
        drawn += 1
    if image.has_map and not state.review_pictures.has(("heat", seq)):
        _heat(state, seq, image)
        drawn += 1
    return drawn


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
