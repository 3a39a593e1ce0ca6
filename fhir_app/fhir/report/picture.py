"""The spine picture: C1 to S5, every reported level in its SINS category colour (PNG).

The layout is defined here in pixels (`level_box`), so a test can look at the pixels of the PNG,
or of a screenshot of the page that shows it, at the place each level is drawn. The colours are
the Okabe-Ito palette, which stays distinguishable with the common colour-vision deficiencies; each
level also carries its score in text, so no meaning rests on colour alone.

Drawing with matplotlib (Agg) costs tens of milliseconds, so pictures are cached by what they show
(`SpinePicture`): patients with the same reported levels and categories share one rendering. The
PNG carries no timestamp or software version: the same picture is the same bytes.

The layers every picture is pasted from (the unreported spine, each level's body in each style)
ship drawn in `layers.npz` beside this module, so that a process (a bulk run, a server worker)
neither imports matplotlib (~0.9 s) nor draws them (~0.4 s) before its first report. The file
carries a fingerprint of everything the drawing depends on; when it does not match (this module
or matplotlib changed), the layers are drawn as before, and a test says to write the file again:
`python -m fhir_app.fhir.report.picture`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import struct
import sys
import threading
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fhir_app.domain.levels import SpinalRegion, VertebralLevel
from fhir_app.domain.sins_answers import CATEGORY_WORDS, SINS_CATEGORY_BANDS, SinsCategory
from fhir_app.fhir.report.view import ReportView

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

WIDTH: Final = 300
HEIGHT: Final = 900
DPI: Final = 100

TOP: Final = 40
PITCH: Final = 24
BOX_HEIGHT: Final = 18
REGION_GAP: Final = 8
CENTRE_X: Final = 110
LABEL_RIGHT: Final = 62
TEXT_LEFT: Final = 160

# Okabe & Ito, "Color Universal Design" (2008).
CATEGORY_COLOUR: Final[dict[SinsCategory, str]] = {
    SinsCategory.STABLE: "#009E73",
    SinsCategory.POTENTIALLY_UNSTABLE: "#F0E442",
    SinsCategory.UNSTABLE: "#D55E00",
}
NOT_REPORTED_COLOUR: Final = "#DDDDDD"
NOT_REPORTED_EDGE: Final = "#999999"
OPEN_HATCH_COLOUR: Final = "#FFFFFF"

# Schematic vertebral body widths: the spine widens from the neck to the lumbar spine and the
# sacrum narrows towards S5.
_WIDTH_BY_REGION: Final[dict[SpinalRegion, int]] = {
    SpinalRegion.CERVICAL: 56,
    SpinalRegion.THORACIC: 66,
    SpinalRegion.LUMBAR: 80,
}
_SACRAL_WIDTHS: Final[dict[VertebralLevel, int]] = {
    VertebralLevel.S1: 76,
    VertebralLevel.S2: 66,
    VertebralLevel.S3: 56,
    VertebralLevel.S4: 46,
    VertebralLevel.S5: 36,
}
_REGION_ORDER: Final = (
    SpinalRegion.CERVICAL,
    SpinalRegion.THORACIC,
    SpinalRegion.LUMBAR,
    SpinalRegion.SACRAL,
)


@dataclass(frozen=True, slots=True)
class Box:
    """A rectangle in PNG pixels, x to the right and y down from the top-left corner."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        """Width in pixels."""
        return self.right - self.left

    @property
    def height(self) -> int:
        """Height in pixels."""
        return self.bottom - self.top


def level_box(level: VertebralLevel) -> Box:
    """Where a level's vertebral body is drawn, in pixels of the PNG."""
    width = _SACRAL_WIDTHS.get(level) or _WIDTH_BY_REGION[level.region]
    top = TOP + level.order * PITCH + _REGION_ORDER.index(level.region) * REGION_GAP
    left = CENTRE_X - width // 2
    return Box(left, top, left + width, top + BOX_HEIGHT)


def band_boxes(level: VertebralLevel, count: int) -> tuple[Box, ...]:
    """The vertical bands of an open level's box, one per candidate category, left to right."""
    box = level_box(level)
    edges = [box.left + (box.width * i) // count for i in range(count + 1)]
    return tuple(Box(edges[i], box.top, edges[i + 1], box.bottom) for i in range(count))


LEGEND_TOP: Final = level_box(VertebralLevel.S5).bottom + 24
LEGEND_PITCH: Final = 20


@dataclass(frozen=True, slots=True)
class DrawnLevel:
    """What the picture shows of one reported level."""

    level: VertebralLevel
    # One colour for a determined category, the candidates' colours (mildest first) when open.
    categories: tuple[SinsCategory, ...]
    open: bool
    caption: str


@dataclass(frozen=True, slots=True)
class SpinePicture:
    """Everything the picture shows; equal pictures are one cached rendering."""

    levels: tuple[DrawnLevel, ...]


def picture_of(view: ReportView) -> SpinePicture:
    """The picture's data from a report view (levels cranio-caudal)."""
    drawn = []
    for level in sorted(view.levels, key=lambda v: v.level.order):
        caption = f"SINS {level.sins}"
        if level.escc_grade is not None:
            caption += f" · ESCC {level.escc_grade}"
        drawn.append(DrawnLevel(level.level, level.candidates, level.category is None, caption))
    return SpinePicture(tuple(drawn))


def render_png(picture: SpinePicture) -> bytes:
    """The PNG of a picture (WIDTH x HEIGHT pixels); cached by content."""
    return _render(picture)


def prepare() -> None:
    """Load now (from `layers.npz`, or by drawing them) the layers every picture is pasted
    from (the unreported spine and one canvas per style: each category, and each run of
    neighbouring categories left open), and the captions' font.

    The bulk run calls it before forking its workers: made once in the parent, the layers are
    shared by every worker instead of being made again in each.
    """
    _background()
    _caption_font()
    for categories, is_open in _layer_styles():
        _bodies(categories, is_open)


# Drawing is layered for speed: the unreported spine (labels, grey bodies, legend) is drawn once;
# every level's body is drawn once per style (a category, or an open set of candidates) on the
# whole canvas, so pasting a level's region gives the pixels drawing it in place would; each
# caption is set once per text.
_TEXT: Final[dict[str, Any]] = {"fontsize": 8.5, "fontfamily": "DejaVu Sans", "va": "center"}
_PAD: Final = 2
# matplotlib does not promise thread safety (its font and text caches are shared), nor does a
# shared FreeType face; the server derives in worker threads, so layers are drawn one at a time.
# Pasting them needs no lock.
_DRAWING: Final = threading.Lock()


def _canvas(region: Box) -> tuple[Figure, Axes]:
    """A canvas of just `region`, whose data coordinates are the picture's pixels, y down."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(region.width / DPI, region.height / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.set_xlim(region.left, region.right)
    axes.set_ylim(region.bottom, region.top)
    axes.set_axis_off()
    return figure, axes


def _rgb(colour: str) -> tuple[int, int, int]:
    value = colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], share: float) -> tuple[int, int, int]:
    red, green, blue = (round(x * (1 - share) + y * share) for x, y in zip(a, b, strict=True))
    return red, green, blue


def _palette() -> tuple[tuple[int, int, int], ...]:
    # Every colour the picture means exactly, then what anti-aliasing needs: a grey ramp for text
    # and lines, and each category colour blended with white (hatching) and black (outline).
    white, black = (255, 255, 255), (0, 0, 0)
    exact = [white, black, _rgb(NOT_REPORTED_COLOUR), _rgb(NOT_REPORTED_EDGE)]
    exact.extend(_rgb(c) for c in CATEGORY_COLOUR.values())
    greys = [(v, v, v) for v in range(0, 256, 17)]
    blends = [
        _mix(_rgb(c), other, share)
        for c in CATEGORY_COLOUR.values()
        for other, share in ((white, 0.25), (white, 0.5), (white, 0.75), (black, 0.5))
    ]
    return tuple(dict.fromkeys([*exact, *greys, *blends]))


# An indexed PNG: a fifth of the bytes of RGB, and category colours stay exact.
PALETTE: Final = _palette()
_PALETTE_BYTES: Final = bytes(v for colour in PALETTE for v in colour)


@lru_cache(maxsize=1)
def _palette_image() -> Image.Image:
    image = Image.new("P", (1, 1))
    # quantize() reads all 256 entries: the rest repeat the last colour, never chosen first.
    image.putpalette(_PALETTE_BYTES + _PALETTE_BYTES[-3:] * (256 - len(PALETTE)))
    return image


def _pixels(figure: Figure, region: Box) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """The canvas of `region` as palette indices, rows top first."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="rgba", dpi=DPI)
    shape = (region.height, region.width, 4)
    return _indexed(np.frombuffer(buffer.getvalue(), dtype=np.uint8).reshape(shape)[:, :, :3])


def _indexed(rgb: np.ndarray[Any, np.dtype[np.uint8]]) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """RGB pixels as indices into PALETTE (nearest colour, no dithering)."""
    indexed = Image.fromarray(np.ascontiguousarray(rgb)).quantize(
        palette=_palette_image(), dither=Image.Dither.NONE
    )
    return np.asarray(indexed, dtype=np.uint8)


_WHOLE: Final = Box(0, 0, WIDTH, HEIGHT)


LAYERS_FILE: Final = Path(__file__).with_name("layers.npz")
_BACKGROUND_LAYER: Final = "background"


def _bodies_layer(categories: tuple[SinsCategory, ...], is_open: bool) -> str:
    return "bodies-" + "-".join(c.name for c in categories) + ("-open" if is_open else "")


def _layer_styles() -> list[tuple[tuple[SinsCategory, ...], bool]]:
    """Every style a level is drawn in: one category, or a run of neighbouring ones left open."""
    bands = [category for _, _, category in SINS_CATEGORY_BANDS]
    styles = []
    for start in range(len(bands)):
        for end in range(start + 1, len(bands) + 1):
            run = tuple(bands[start:end])
            styles.append((run, len(run) > 1))
    return styles


def layers_fingerprint() -> str:
    """What the drawn layers depend on: this module's code, matplotlib's version, and the words
    and labels it draws (which come from the domain)."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(importlib.metadata.version("matplotlib").encode())
    digest.update(repr((legend_entries(), [level.label for level in VertebralLevel])).encode())
    return digest.hexdigest()


def draw_layers() -> dict[str, np.ndarray[Any, np.dtype[np.uint8]]]:
    """Draw every layer with matplotlib (what `layers.npz` holds)."""
    with _DRAWING:
        layers = {_BACKGROUND_LAYER: _draw_background()}
        for categories, is_open in _layer_styles():
            layers[_bodies_layer(categories, is_open)] = _draw_bodies(categories, is_open)
    return layers


def write_layers(path: Path = LAYERS_FILE) -> None:
    """Draw the layers and write them, with their fingerprint, to `path`."""
    arrays: dict[str, Any] = {
        "fingerprint": np.frombuffer(layers_fingerprint().encode(), dtype=np.uint8),
        **draw_layers(),
    }
    with path.open("wb") as handle:
        np.savez_compressed(handle, **arrays)


@lru_cache(maxsize=1)
def shipped_layers() -> dict[str, np.ndarray[Any, np.dtype[np.uint8]]]:
    """The layers of `layers.npz` when its fingerprint matches; empty otherwise."""
    try:
        with np.load(LAYERS_FILE, allow_pickle=False) as stored:
            found = {name: stored[name] for name in stored.files}
    except (OSError, ValueError):
        return {}
    fingerprint = found.pop("fingerprint", np.zeros(0, dtype=np.uint8)).tobytes().decode()
    return found if fingerprint == layers_fingerprint() else {}


@lru_cache(maxsize=1)
def _background() -> np.ndarray[Any, np.dtype[np.uint8]]:
    shipped = shipped_layers().get(_BACKGROUND_LAYER)
    if shipped is not None:
        return shipped
    with _DRAWING:
        return _draw_background()


def _draw_background() -> np.ndarray[Any, np.dtype[np.uint8]]:
    figure, axes = _canvas(_WHOLE)
    axes.text(10, 18, "Spine C1-S5 by SINS category", fontweight="bold", **_TEXT)
    for level in VertebralLevel:
        box = level_box(level)
        axes.text(LABEL_RIGHT, (box.top + box.bottom) / 2, level.label, ha="right", **_TEXT)
        axes.add_artist(_rect(box, NOT_REPORTED_COLOUR, NOT_REPORTED_EDGE))
    _legend(axes)
    return _pixels(figure, _WHOLE)


def _body_region(level: VertebralLevel) -> Box:
    box = level_box(level)
    return Box(box.left - _PAD, box.top - _PAD, box.right + _PAD, box.bottom + _PAD)


def _caption_region(level: VertebralLevel) -> Box:
    box = level_box(level)
    return Box(TEXT_LEFT - _PAD, box.top - _PAD, WIDTH, box.bottom + _PAD)


def _slices(region: Box) -> tuple[slice, slice]:
    return slice(region.top, region.bottom), slice(region.left, region.right)


def _body(
    level: VertebralLevel, categories: tuple[SinsCategory, ...], is_open: bool
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    return _bodies(categories, is_open)[_slices(_body_region(level))]


@lru_cache(maxsize=16)
def _bodies(
    categories: tuple[SinsCategory, ...], is_open: bool
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    shipped = shipped_layers().get(_bodies_layer(categories, is_open))
    if shipped is not None:
        return shipped
    with _DRAWING:
        return _draw_bodies(categories, is_open)


def _draw_bodies(
    categories: tuple[SinsCategory, ...], is_open: bool
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    # Every level in one style at once: one drawing per style instead of one per level.
    figure, axes = _canvas(_WHOLE)
    for level in VertebralLevel:
        box = level_box(level)
        if not is_open:
            axes.add_artist(_rect(box, CATEGORY_COLOUR[categories[0]], "black"))
            continue
        for band, category in zip(band_boxes(level, len(categories)), categories, strict=True):
            patch = _rect(band, CATEGORY_COLOUR[category], None)
            patch.set_hatch("//")
            patch.set_hatchcolor(OPEN_HATCH_COLOUR)
            axes.add_artist(patch)
        outline = _rect(box, "none", "black")
        outline.set_linestyle((0, (3, 2)))
        axes.add_artist(outline)
    return _pixels(figure, _WHOLE)


@lru_cache(maxsize=1)
def _caption_font() -> ImageFont.FreeTypeFont:
    # matplotlib's own DejaVu Sans Bold, at the size of its 8.5 pt at DPI: the labels' typeface.
    # Found without importing matplotlib (its package folder holds mpl-data).
    spec = importlib.util.find_spec("matplotlib")
    locations = spec.submodule_search_locations if spec is not None else None
    if not locations:
        raise RuntimeError("matplotlib, whose DejaVu Sans font the picture uses, is not installed")
    path = Path(locations[0]) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"
    return ImageFont.truetype(str(path), size=round(8.5 * DPI / 72))


@lru_cache(maxsize=1024)
def _caption(caption: str) -> np.ndarray[Any, np.dtype[np.uint8]]:
    # Pillow sets a line of text in ~0.1 ms, matplotlib in ~7: captions vary by patient.
    region = _caption_region(VertebralLevel.C1)
    image = Image.new("RGB", (region.width, region.height), "white")
    # One FreeType face is shared: set one caption at a time.
    with _DRAWING:
        ImageDraw.Draw(image).text(
            (TEXT_LEFT - region.left, region.height / 2),
            caption,
            font=_caption_font(),
            fill="black",
            anchor="lm",
        )
    return _indexed(np.asarray(image))


def pixels_of(picture: SpinePicture) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """The picture as palette indices (HEIGHT x WIDTH, rows top first): the unreported spine
    with each drawn level's body and caption pasted in."""
    pixels = _background().copy()
    for drawn in picture.levels:
        _paste(pixels, drawn, 0)
    return pixels


def _paste(rows: np.ndarray[Any, np.dtype[np.uint8]], drawn: DrawnLevel, top: int) -> None:
    """Paste a drawn level's body and caption into `rows`, the image's rows from `top` on."""
    for region, pixels in (
        (_body_region(drawn.level), _body(drawn.level, drawn.categories, drawn.open)),
        (_caption_region(drawn.level), _caption(drawn.caption)),
    ):
        rows[region.top - top : region.bottom - top, region.left : region.right] = pixels


# The PNG is written band by band. Every level owns the rows of its body and caption, and no
# other level reaches into them; the rows between levels never change. So the image is a stack
# of row bands, each compressed once per content (zlib's full flush ends a band on a byte with
# an empty dictionary, so compressed bands can be joined into one stream) and cached: a picture
# costs a few cached lookups, the compression of the levels not seen before, and checksums.
# Measured: 0.25 ms a picture instead of 2.0 (composing the image and compressing it whole with
# Pillow), for the same pixels in slightly fewer bytes.
_ZLIB_LEVEL: Final = 6
_ADLER_BASE: Final = 65521


@dataclass(frozen=True, slots=True)
class _Band:
    deflated: bytes  # raw deflate blocks, not final, ending on a full flush
    adler: int  # adler32 of the band's scanlines
    length: int  # bytes of the band's scanlines


def _deflated(rows: np.ndarray[Any, np.dtype[np.uint8]]) -> _Band:
    """Rows of palette indices as PNG scanlines (filter type 0, none), deflated."""
    scanlines = np.zeros((rows.shape[0], rows.shape[1] + 1), dtype=np.uint8)
    scanlines[:, 1:] = rows
    raw = scanlines.tobytes()
    compressor = zlib.compressobj(_ZLIB_LEVEL, zlib.DEFLATED, -15)
    data = compressor.compress(raw) + compressor.flush(zlib.Z_FULL_FLUSH)
    return _Band(data, zlib.adler32(raw), len(raw))


def adler32_combine(first: int, second: int, second_length: int) -> int:
    """The adler32 of A + B from adler32(A), adler32(B) and len(B) (zlib's adler32_combine)."""
    remainder = second_length % _ADLER_BASE
    low = first & 0xFFFF
    high = (remainder * low) % _ADLER_BASE
    low = (low + (second & 0xFFFF) + _ADLER_BASE - 1) % _ADLER_BASE
    high = (high + (first >> 16) + (second >> 16) + _ADLER_BASE - remainder) % _ADLER_BASE
    return low | (high << 16)


@lru_cache(maxsize=1)
def _row_bands() -> tuple[tuple[int, int, VertebralLevel | None], ...]:
    """(first row, end row, level or None between levels), top to bottom, covering the image."""
    bands: list[tuple[int, int, VertebralLevel | None]] = []
    row = 0
    for level in VertebralLevel:
        body, caption = _body_region(level), _caption_region(level)
        top, bottom = min(body.top, caption.top), max(body.bottom, caption.bottom)
        if top > row:
            bands.append((row, top, None))
        bands.append((top, bottom, level))
        row = bottom
    bands.append((row, HEIGHT, None))
    return tuple(bands)


@lru_cache(maxsize=64)
def _plain_band(top: int, bottom: int) -> _Band:
    return _deflated(_background()[top:bottom])


@lru_cache(maxsize=4096)
def _level_band(drawn: DrawnLevel, top: int, bottom: int) -> _Band:
    rows = _background()[top:bottom].copy()
    _paste(rows, drawn, top)
    return _deflated(rows)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
# Width, height, 8 bits per index, colour type 3 (indexed), deflate, adaptive filters
# (each scanline says its own: here 0, none), no interlace.
_IHDR: Final = _chunk(b"IHDR", struct.pack(">IIBBBBB", WIDTH, HEIGHT, 8, 3, 0, 0, 0))
_PLTE: Final = _chunk(b"PLTE", _PALETTE_BYTES)
_IEND: Final = _chunk(b"IEND", b"")
# zlib stream header (deflate, 32 KiB window, default level); the final block: empty, fixed.
_ZLIB_HEADER: Final = b"\x78\x9c"
_FINAL_BLOCK: Final = b"\x03\x00"


@lru_cache(maxsize=512)
def _render(picture: SpinePicture) -> bytes:
    drawn_at = {drawn.level: drawn for drawn in picture.levels}
    parts = [_ZLIB_HEADER]
    adler = 1  # adler32 of nothing
    for top, bottom, level in _row_bands():
        drawn = drawn_at.get(level) if level is not None else None
        band = _plain_band(top, bottom) if drawn is None else _level_band(drawn, top, bottom)
        parts.append(band.deflated)
        adler = adler32_combine(adler, band.adler, band.length)
    parts.append(_FINAL_BLOCK)
    parts.append(adler.to_bytes(4, "big"))
    # No metadata chunk: no time, no software version (matplotlib's savefig would add one).
    return _PNG_SIGNATURE + _IHDR + _PLTE + _chunk(b"IDAT", b"".join(parts)) + _IEND


def _rect(box: Box, face: str, edge: str | None) -> Rectangle:
    from matplotlib.patches import Rectangle

    return Rectangle(
        (box.left, box.top),
        box.width,
        box.height,
        facecolor=face,
        edgecolor=edge or "none",
        linewidth=1.0 if edge else 0.0,
    )


def legend_entries() -> tuple[tuple[str, str | None], ...]:
    """The legend, top to bottom: (words, colour); None marks the open-category swatch."""
    entries: list[tuple[str, str | None]] = [
        (f"{CATEGORY_WORDS[c]} (SINS {low}-{high})", CATEGORY_COLOUR[c])
        for low, high, c in SINS_CATEGORY_BANDS
    ]
    entries.append(("category open (hatched: candidates)", None))
    entries.append(("not reported", NOT_REPORTED_COLOUR))
    return tuple(entries)


def legend_box(index: int) -> Box:
    """The swatch of legend entry `index`, in pixels."""
    top = LEGEND_TOP + index * LEGEND_PITCH
    return Box(20, top, 44, top + 14)


def _legend(axes: Axes) -> None:
    for index, (words, colour) in enumerate(legend_entries()):
        box = legend_box(index)
        if colour is None:
            bands = [CATEGORY_COLOUR[SinsCategory.STABLE], CATEGORY_COLOUR[SinsCategory.UNSTABLE]]
            half = Box(box.left, box.top, box.left + box.width // 2, box.bottom)
            other = Box(half.right, box.top, box.right, box.bottom)
            for part, face in ((half, bands[0]), (other, bands[1])):
                patch = _rect(part, face, None)
                patch.set_hatch("//")
                patch.set_hatchcolor(OPEN_HATCH_COLOUR)
                axes.add_artist(patch)
            outline = _rect(box, "none", "black")
            outline.set_linestyle((0, (3, 2)))
            axes.add_artist(outline)
        else:
            edge = NOT_REPORTED_EDGE if colour == NOT_REPORTED_COLOUR else "black"
            axes.add_artist(_rect(box, colour, edge))
        axes.text(box.right + 8, (box.top + box.bottom) / 2, words, ha="left", **_TEXT)


if __name__ == "__main__":
    write_layers()
    sys.stdout.write(f"wrote {LAYERS_FILE} ({LAYERS_FILE.stat().st_size:,} bytes)\n")
