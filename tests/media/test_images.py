"""decode_image / accept_image / decode_base64_image / closest_aspect_ratio on images built in memory."""

from __future__ import annotations

import base64
import io
import os

import pytest
from PIL import Image

from reel.media.images import (
    MIN_IMAGE_SIDE,
    OUTPUT_SIZES,
    ImageRejected,
    accept_image,
    closest_aspect_ratio,
    decode_base64_image,
    decode_image,
)

LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": 40_000_000}


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_allowed_formats_decode_to_rgb(fmt: str) -> None:
    data = encode(Image.new("RGB", (96, 64), (200, 30, 30)), fmt)
    image = decode_image(data, **LIMITS)
    assert image.mode == "RGB"
    assert image.size == (96, 64)
    red, green, _blue = image.getpixel((10, 10))  # type: ignore[misc]
    assert red > 150 and green < 80


@pytest.mark.parametrize(("fmt", "name"), [("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF")])
def test_other_formats_rejected_by_name(fmt: str, name: str) -> None:
    data = encode(Image.new("RGB", (8, 8)), fmt)
    with pytest.raises(ImageRejected) as info:
        decode_image(data, **LIMITS)
    assert info.value.message == f"unsupported format {name}; send JPEG, PNG or WebP"


def test_random_bytes_rejected() -> None:
    with pytest.raises(ImageRejected, match="not a recognisable image"):
        decode_image(os.urandom(4096), **LIMITS)


def test_empty_rejected() -> None:
    with pytest.raises(ImageRejected, match="empty"):
        decode_image(b"", **LIMITS)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_bomb_rejected_before_decoding() -> None:
    # One colour: 100 MP compresses to a few hundred KB.
    data = encode(Image.new("L", (10000, 10000), 0), "PNG")
    assert len(data) < 1_000_000
    with pytest.raises(ImageRejected) as info:
        decode_image(data, **LIMITS)
    assert info.value.message == "PNG is 10000\u00d710000 px, over the 40 MP limit"


def test_pixel_limit_is_inclusive_and_named() -> None:
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    assert decode_image(data, max_bytes=10**6, max_pixels=10_000).size == (100, 100)
    with pytest.raises(ImageRejected, match="over the 9999 px limit"):
        decode_image(data, max_bytes=10**6, max_pixels=9_999)


def test_byte_limit() -> None:
    data = encode(Image.new("RGB", (32, 32)), "PNG")
    with pytest.raises(ImageRejected, match=f"image is {len(data)} bytes, over the 10-byte limit"):
        decode_image(data, max_bytes=10, max_pixels=10**6)


def test_exif_orientation_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    data = encode(Image.new("RGB", (128, 64), (0, 0, 255)), "JPEG", exif=exif.tobytes())
    assert decode_image(data, **LIMITS).size == (64, 128)


def test_rgba_png_composited_on_white() -> None:
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    image.putpixel((0, 0), (255, 0, 0, 255))
    decoded = decode_image(encode(image, "PNG"), **LIMITS)
    assert decoded.mode == "RGB"
    assert decoded.getpixel((5, 5)) == (255, 255, 255)
    assert decoded.getpixel((0, 0)) == (255, 0, 0)


def test_palette_with_transparency_and_la() -> None:
    palette = Image.new("P", (64, 64), 0)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.info["transparency"] = 0
    assert decode_image(encode(palette, "PNG", transparency=0), **LIMITS).getpixel((1, 1)) == (
        255,
        255,
        255,
    )
    la = Image.new("LA", (64, 64), (0, 255))
    assert decode_image(encode(la, "PNG"), **LIMITS).getpixel((1, 1)) == (0, 0, 0)


def test_sixteen_bit_png_scaled_not_clipped() -> None:
    image = Image.new("I;16", (64, 64), 32768)
    decoded = decode_image(encode(image, "PNG"), **LIMITS)
    assert decoded.mode == "RGB"
    assert decoded.getpixel((0, 0)) == (128, 128, 128)


def test_cmyk_jpeg() -> None:
    data = encode(Image.new("CMYK", (64, 64), (0, 255, 255, 0)), "JPEG")
    decoded = decode_image(data, **LIMITS)
    assert decoded.mode == "RGB"
    red, green, blue = decoded.getpixel((8, 8))  # type: ignore[misc]
    assert red > 200 and green < 60 and blue < 60


@pytest.mark.parametrize(("width", "height"), [(1, 1), (63, 200), (200, 63)])
def test_a_shorter_side_under_64_px_is_rejected(width: int, height: int) -> None:
    data = encode(Image.new("RGB", (width, height)), "PNG")
    with pytest.raises(ImageRejected) as info:
        decode_image(data, **LIMITS)
    assert info.value.message == (
        f"PNG is {width}\u00d7{height} px; the shorter side must be at least {MIN_IMAGE_SIDE} px"
    )


def test_the_minimum_side_is_inclusive_and_64_px() -> None:
    assert MIN_IMAGE_SIDE == 64  # the number README.md documents
    assert decode_image(encode(Image.new("RGB", (64, 64)), "WEBP"), **LIMITS).size == (64, 64)


def test_the_minimum_side_is_checked_from_the_header() -> None:
    # Pixels that do not decode: the size in the header is reason enough.
    data = encode(Image.effect_noise((256, 32), 64).convert("RGB"), "PNG")
    with pytest.raises(ImageRejected, match="256\u00d732 px; the shorter side must be at least 64 px"):
        decode_image(data[: len(data) // 2], **LIMITS)


def test_truncated_png_rejected() -> None:
    data = encode(Image.effect_noise((256, 256), 64).convert("RGB"), "PNG")
    with pytest.raises(ImageRejected, match="could not decode the image"):
        decode_image(data[: len(data) // 2], **LIMITS)


PNG = encode(Image.new("RGB", (3, 2), (1, 2, 3)), "PNG")


@pytest.mark.parametrize(
    "text",
    [
        "data:image/png;base64," + base64.b64encode(PNG).decode(),
        "DATA:image/png;charset=x;BASE64," + base64.b64encode(PNG).decode(),
        base64.b64encode(PNG).decode(),
        "  \n" + "\n".join(base64.b64encode(PNG).decode()[i : i + 10] for i in range(0, 200, 10)) + "\n",
        base64.b64encode(PNG).decode().rstrip("="),
        base64.urlsafe_b64encode(PNG).decode().rstrip("="),
    ],
)
def test_base64_forms_accepted(text: str) -> None:
    assert decode_base64_image(text) == PNG


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not base64 at all!", "not valid base64"),
        ("abcde", "not valid base64"),
        ("", "empty"),
        ("data:image/png,rawbytes", "must be base64"),
        ("data:image/png;base64", "no ','"),
    ],
)
def test_base64_garbage_rejected(text: str, match: str) -> None:
    with pytest.raises(ImageRejected, match=match):
        decode_base64_image(text)


@pytest.mark.parametrize(
    ("size", "ratio"),
    [
        ((1920, 1080), "16:9"),
        ((1000, 1000), "1:1"),
        ((600, 800), "3:4"),
        ((1080, 1920), "9:16"),
        ((1024, 768), "4:3"),
        ((4000, 1000), "16:9"),
        ((1100, 1000), "1:1"),
    ],
)
def test_closest_aspect_ratio(size: tuple[int, int], ratio: str) -> None:
    assert closest_aspect_ratio(*size) == ratio
    assert ratio in OUTPUT_SIZES


def test_output_sizes_match_their_ratio() -> None:
    for name, (width, height) in OUTPUT_SIZES.items():
        assert closest_aspect_ratio(width, height) == name
        assert width % 16 == 0 and height % 16 == 0


@pytest.mark.parametrize(("fmt", "extension"), [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp")])
def test_an_upright_rgb_image_is_kept_as_sent(fmt: str, extension: str) -> None:
    data = encode(Image.effect_mandelbrot((96, 64), (-2.0, -1.2, 1.0, 1.2), 30).convert("RGB"), fmt)
    accepted = accept_image(data, **LIMITS)
    assert (accepted.stored, accepted.extension, accepted.size) == (data, extension, (96, 64))


def test_an_image_to_turn_or_convert_is_kept_as_the_png_decode_image_makes() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    turned = encode(
        Image.effect_mandelbrot((128, 64), (-2.0, -1.2, 1.0, 1.2), 30).convert("RGB"),
        "JPEG",
        exif=exif.tobytes(),
    )
    transparent = encode(Image.new("RGBA", (80, 80), (0, 0, 0, 0)), "PNG")
    for data in (turned, transparent):
        accepted = accept_image(data, **LIMITS)
        assert accepted.extension == "png"
        stored = Image.open(io.BytesIO(accepted.stored))
        assert stored.format == "PNG" and stored.mode == "RGB" and stored.size == accepted.size
        assert stored.tobytes() == decode_image(data, **LIMITS).tobytes()
    assert accept_image(turned, **LIMITS).size == (64, 128)


def test_accepting_decodes_every_pixel() -> None:
    """A PNG cut short has a valid header: refused at submission, not by the worker later."""
    data = encode(Image.effect_mandelbrot((256, 256), (-2.0, -1.2, 1.0, 1.2), 30).convert("RGB"), "PNG")
    with pytest.raises(ImageRejected, match="could not decode"):
        accept_image(data[: len(data) // 2], **LIMITS)
