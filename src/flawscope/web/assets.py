"""The app's scripts, style sheet and icon under names that carry their content's hash.

A browser may then keep them for a year without asking again (``immutable``): a new version of a
file has a new name, and a page of a new version names the new files. Pages name them through
``assets.url(name)`` in templates; ``assets.version`` (one hash over all of them) tells the in-page
navigation when a swapped-in page needs scripts the browser has not loaded (it then loads the page
the normal way). The files are read once, when the app is made, and served from memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request, Response

from flawscope.web.errors import NotFoundError

MEDIA = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
FOREVER = {"cache-control": "public, max-age=31536000, immutable"}
router = APIRouter(include_in_schema=False)


class AssetNotFoundError(NotFoundError):
    """No asset of that name (or an old version of one)."""


@dataclass(frozen=True)
class Asset:
    """One file: its name with the hash, its bytes and media type."""

    hashed: str
    data: bytes
    media: str


class Assets:
    """The static files of a folder, by plain name and by hashed name.

    Args:
        folder: where the files are (only files with a known media type are taken).
    """

    def __init__(self, folder: Path) -> None:
        self.by_name: dict[str, Asset] = {}
        for path in sorted(folder.iterdir()):
            media = MEDIA.get(path.suffix)
            if media is None or not path.is_file():
                continue
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()[:12]
            self.by_name[path.name] = Asset(f"{path.stem}.{digest}{path.suffix}", data, media)
        self.by_hashed = {a.hashed: a for a in self.by_name.values()}
        every = "".join(a.hashed for a in self.by_name.values())
        self.version = hashlib.sha256(every.encode()).hexdigest()[:12]

    def url(self, name: str) -> str:
        """The URL of a file by its plain name (``app.css`` -> ``/assets/app.<hash>.css``).

        Raises:
            KeyError: no such file (a template names a file that does not exist).
        """
        return f"/assets/{self.by_name[name].hashed}"


@router.get("/assets/{name}")
def asset(request: Request, name: str) -> Response:
    """A script, style sheet or icon by its hashed name, cacheable for a year."""
    assets: Assets = request.app.state.assets
    found = assets.by_hashed.get(name)
    if found is None:
        raise AssetNotFoundError(name[:100], "no such asset (the page may be from an older version)")
    return Response(found.data, media_type=found.media, headers=FOREVER)
