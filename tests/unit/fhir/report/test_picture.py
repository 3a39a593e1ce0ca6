"""The spine picture: layout in pixels, category colours at each level's place, determinism."""

from __future__ import annotations

import io
import subprocess
import sys
import zlib
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from report_support import outputs_of, report_of

from fhir_app.domain.levels import VertebralLevel
from fhir_app.domain.sins_answers import SinsCategory
from fhir_app.fhir.report import picture
from fhir_app.fhir.report.picture import (
    CATEGORY_COLOUR,
    HEIGHT,
    NOT_REPORTED_COLOUR,
    WIDTH,
    Box,
    DrawnLevel,
    SpinePicture,
    band_boxes,
    legend_box,
    legend_entries,
    level_box,
    picture_of,
    render_png,
)
from fhir_app.fhir.report.view import build_view


def rgb(colour: str) -> tuple[int, int, int]:
    value = colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def share(image: np.ndarray, box: Box, colour: str, inset: int = 3) -> float:
    """The share of the box's inner pixels that are exactly `colour`."""
    region = image[box.top + inset : box.bottom - inset, box.left + inset : box.right - inset]
    return float(np.all(region == rgb(colour), axis=2).mean())


def test_every_level_has_a_box_in_order_inside_the_picture() -> None:
    boxes = [level_box(level) for level in VertebralLevel]
    assert len(boxes) == 29
    for upper, lower in pairwise(boxes):
        assert upper.bottom < lower.top
    assert all(0 <= b.left < b.right <= WIDTH and 0 <= b.top < b.bottom <= HEIGHT for b in boxes)
    assert legend_box(len(legend_entries()) - 1).bottom <= HEIGHT
    assert boxes[-1].bottom < legend_box(0).top


def test_bands_split_the_box_without_gaps() -> None:
    box = level_box(VertebralLevel.L2)
    bands = band_boxes(VertebralLevel.L2, 3)
    assert bands[0].left == box.left
    assert bands[-1].right == box.right
    assert all(a.right == b.left for a, b in pairwise(bands))


SEVERAL = picture_of(
    build_view(
        outputs_of("patient-08-several-levels.json"),
        report_of(outputs_of("patient-08-several-levels.json")),
        "0",
    )
)


def test_the_picture_of_the_several_level_example() -> None:
    image = pixels(render_png(SEVERAL))
    assert image.shape == (HEIGHT, WIDTH, 3)
    # T11 unstable: one solid colour.
    assert (
        share(image, level_box(VertebralLevel.T11), CATEGORY_COLOUR[SinsCategory.UNSTABLE]) > 0.99
    )
    # L2 open over all three categories, T4 over stable and potentially unstable: hatched bands.
    for level, candidates in (
        (VertebralLevel.L2, list(SinsCategory)),
        (VertebralLevel.T4, [SinsCategory.STABLE, SinsCategory.POTENTIALLY_UNSTABLE]),
    ):
        bands = band_boxes(level, len(candidates))
        for band, category in zip(bands, candidates, strict=True):
            covered = share(image, band, CATEGORY_COLOUR[category], inset=2)
            # Mostly the candidate's colour, yet visibly hatched (not a solid fill).
            assert 0.4 < covered < 0.95, (level, category, covered)
    # Every other level is grey.
    for level in VertebralLevel:
        if level not in (VertebralLevel.T11, VertebralLevel.L2, VertebralLevel.T4):
            assert share(image, level_box(level), NOT_REPORTED_COLOUR) > 0.99, level


@pytest.mark.parametrize("category", list(SinsCategory))
@pytest.mark.parametrize("level", [VertebralLevel.C1, VertebralLevel.T7, VertebralLevel.S5])
def test_a_determined_level_is_drawn_in_its_category_colour(
    level: VertebralLevel, category: SinsCategory
) -> None:
    drawn = SpinePicture((DrawnLevel(level, (category,), False, "SINS 9"),))
    image = pixels(render_png(drawn))
    assert share(image, level_box(level), CATEGORY_COLOUR[category]) > 0.99
    others = [c for c in SinsCategory if c is not category]
    assert all(share(image, level_box(level), CATEGORY_COLOUR[c]) == 0 for c in others)


def test_the_legend_shows_each_category_colour() -> None:
    image = pixels(render_png(SpinePicture(())))
    for index, (_, colour) in enumerate(legend_entries()):
        if colour is not None:
            assert share(image, legend_box(index), colour, inset=2) > 0.99


def test_escc_is_written_beside_a_level_when_known() -> None:
    plain = DrawnLevel(VertebralLevel.T11, (SinsCategory.UNSTABLE,), False, "SINS 16")
    graded = DrawnLevel(VertebralLevel.T11, (SinsCategory.UNSTABLE,), False, "SINS 16 · ESCC 2")
    without, with_grade = (pixels(render_png(SpinePicture((d,)))) for d in (plain, graded))
    box = level_box(VertebralLevel.T11)
    beside = (slice(box.top, box.bottom), slice(picture.TEXT_LEFT + 60, WIDTH))
    assert (without[beside] != with_grade[beside]).any()
    assert (without[: box.top - 2] == with_grade[: box.top - 2]).all()


def test_the_caption_carries_the_escc_grade_of_the_view() -> None:
    outputs = outputs_of("patient-08-several-levels.json")
    view = build_view(outputs, report_of(outputs), "0")
    captions = {d.level: d.caption for d in picture_of(view).levels}
    assert captions == {level.level: f"SINS {level.sins}" for level in view.levels}
    assert captions[VertebralLevel.L2] == "SINS 4-14"


def png_chunks(png: bytes) -> list[bytes]:
    chunks, position = [], 8
    while position < len(png):
        length = int.from_bytes(png[position : position + 4], "big")
        chunks.append(png[position + 4 : position + 8])
        position += 12 + length
    return chunks


def test_the_png_is_deterministic_and_carries_no_time_or_software() -> None:
    first = picture._render.__wrapped__(SEVERAL)  # type: ignore[attr-defined]
    picture._bodies.cache_clear()
    picture._caption.cache_clear()
    picture._background.cache_clear()
    picture._level_band.cache_clear()
    picture._plain_band.cache_clear()
    second = picture._render.__wrapped__(SEVERAL)  # type: ignore[attr-defined]
    assert first == second
    assert set(png_chunks(first)) <= {b"IHDR", b"PLTE", b"IDAT", b"IEND"}
    assert zlib.crc32(first) == zlib.crc32(render_png(SEVERAL))


def _clear_layer_caches() -> None:
    for cached in (
        picture.shipped_layers,
        picture._background,
        picture._bodies,
        picture._level_band,
        picture._plain_band,
        picture._render,
    ):
        cached.cache_clear()


def test_the_shipped_layers_are_what_drawing_them_gives() -> None:
    shipped = picture.shipped_layers()
    assert shipped, (
        "fhir_app/fhir/report/layers.npz is missing or stale (its fingerprint does not match "
        "picture.py and matplotlib): write it again with `python -m fhir_app.fhir.report.picture`"
    )
    drawn = picture.draw_layers()
    assert sorted(shipped) == sorted(drawn)
    for name, layer in drawn.items():
        assert layer.dtype == shipped[name].dtype
        assert np.array_equal(layer, shipped[name]), name


def test_stale_layers_are_drawn_again_into_the_same_picture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_file = picture._render.__wrapped__(SEVERAL)  # type: ignore[attr-defined]
    stale = tmp_path / "layers.npz"
    np.savez_compressed(
        stale,
        fingerprint=np.frombuffer(b"another drawing", dtype=np.uint8),
        background=np.zeros((HEIGHT, WIDTH), dtype=np.uint8),
    )
    monkeypatch.setattr(picture, "LAYERS_FILE", stale)
    _clear_layer_caches()
    try:
        assert picture.shipped_layers() == {}
        drawn = picture._render.__wrapped__(SEVERAL)  # type: ignore[attr-defined]
    finally:
        monkeypatch.undo()
        _clear_layer_caches()
    assert np.array_equal(pixels(drawn), pixels(from_file))


def test_a_process_renders_pictures_without_importing_matplotlib() -> None:
    code = (
        "import sys\n"
        "from fhir_app.fhir.report import picture, presented\n"
        "presented.prepare()\n"
        "level = picture.DrawnLevel(picture.VertebralLevel.L1, "
        "(picture.SinsCategory.UNSTABLE,), False, 'SINS 13')\n"
        "assert picture.render_png(picture.SpinePicture((level,))).startswith(b'\\x89PNG')\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@given(st.binary(max_size=3000), st.binary(max_size=70_000))
def test_adler32_combine_is_the_checksum_of_the_joined_bytes(first: bytes, second: bytes) -> None:
    combined = picture.adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second))
    assert combined == zlib.adler32(first + second)


_DRAWN = st.builds(
    DrawnLevel,
    level=st.sampled_from(list(VertebralLevel)),
    categories=st.sampled_from(
        [
            (SinsCategory.STABLE,),
            (SinsCategory.POTENTIALLY_UNSTABLE,),
            (SinsCategory.UNSTABLE,),
            (SinsCategory.STABLE, SinsCategory.POTENTIALLY_UNSTABLE),
            (SinsCategory.POTENTIALLY_UNSTABLE, SinsCategory.UNSTABLE),
            tuple(SinsCategory),
        ]
    ),
    open=st.booleans(),
    caption=st.sampled_from(["SINS 0", "SINS 9", "SINS 13 · ESCC 1b", "SINS 18 · ESCC 3"]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_DRAWN, max_size=6, unique_by=lambda drawn: drawn.level))
def test_the_png_written_band_by_band_is_the_picture_exactly(drawn: list[DrawnLevel]) -> None:
    shown = SpinePicture(tuple(sorted(drawn, key=lambda d: d.level.order)))
    png = render_png(shown)
    expected = picture.pixels_of(shown)
    # Every chunk's CRC holds, and the one zlib stream (adler32 included) inflates to the
    # picture's scanlines, each with filter type 0.
    position, idat = 8, b""
    while position < len(png):
        length = int.from_bytes(png[position : position + 4], "big")
        kind = png[position + 4 : position + 8]
        data = png[position + 8 : position + 8 + length]
        crc = int.from_bytes(png[position + 8 + length : position + 12 + length], "big")
        assert zlib.crc32(kind + data) == crc, kind
        idat += data if kind == b"IDAT" else b""
        position += 12 + length
    scanlines = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(HEIGHT, WIDTH + 1)
    assert not scanlines[:, 0].any()
    assert np.array_equal(scanlines[:, 1:], expected)
    assert int(expected.max()) < len(picture.PALETTE)
    # And an image library reads the same indices and palette.
    decoded = Image.open(io.BytesIO(png))
    assert decoded.mode == "P"
    assert np.array_equal(np.asarray(decoded), expected)
