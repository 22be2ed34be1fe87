"""Pixel encodings of the synthetic ultrasound DICOM files.

Turns display frames (RGB) into the stored pixels of a scanner profile: MONOCHROME2 luma, RGB,
8-bit PALETTE COLOR (palette of :func:`simulations.cohort.annotations.display_palette`) or
YBR_FULL_422, uncompressed or compressed with RLE, JPEG-LS, JPEG 2000 (lossless, through
pydicom's encoders) or JPEG baseline (Pillow, encapsulated). pydicom has no JPEG baseline
encoder, hence Pillow (``shared/reference/realism.md`` section 4.2).
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_encoder
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from simulations.cohort.annotations import ANNOTATION_COLORS, PALETTE_GRAY_LEVELS, display_palette
from simulations.cohort.scanners import ScannerProfile

__all__ = [
    "SUPPORTED_ENCODINGS",
    "check_encodable",
    "luminance",
    "describe_pixels",
    "set_native_pixel_data",
    "add_pixel_data",
]

_LOSSLESS_PHOTOMETRICS = ("MONOCHROME2", "RGB", "PALETTE COLOR")


# (photometric, compression) -> (transfer syntax, pydicom encoding plugin; "" = none / Pillow)
SUPPORTED_ENCODINGS: dict[tuple[str, str], tuple[UID, str]] = {
    **{(pi, "none"): (ExplicitVRLittleEndian, "") for pi in _LOSSLESS_PHOTOMETRICS},
    **{(pi, "rle"): (RLELossless, "pylibjpeg") for pi in _LOSSLESS_PHOTOMETRICS},
    **{(pi, "jpeg_ls"): (JPEGLSLossless, "pyjpegls") for pi in _LOSSLESS_PHOTOMETRICS},
    **{(pi, "jpeg2000"): (JPEG2000Lossless, "pylibjpeg") for pi in _LOSSLESS_PHOTOMETRICS},
    ("MONOCHROME2", "jpeg_baseline"): (JPEGBaseline8Bit, ""),
    ("YBR_FULL_422", "jpeg_baseline"): (JPEGBaseline8Bit, ""),
}


def check_encodable(profile: ScannerProfile) -> None:
    """Raise ValueError if the profile's photometric x compression cannot be written.

    Call it when a cohort config is loaded, so a bad profile fails before any file is written.
    """
    key = (profile.photometric, profile.compression)
    if key not in SUPPORTED_ENCODINGS:
        supported = sorted(f"{pi}+{c}" for pi, c in SUPPORTED_ENCODINGS)
        raise ValueError(f"cannot write photometric {key[0]!r} with compression {key[1]!r}; "
                         f"supported: {supported}")
    _, plugin = SUPPORTED_ENCODINGS[key]
    if plugin and plugin not in get_encoder(SUPPORTED_ENCODINGS[key][0]).available_plugins:
        raise ValueError(f"compression {key[1]!r} needs the pydicom encoding plugin {plugin!r}")
    if profile.compression == "jpeg_baseline" and not 1 <= profile.jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {profile.jpeg_quality}")


def _luma_millis(frames_rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma x 1000, exact integers: uint32 [...] from uint8 [..., 3]."""
    rgb = frames_rgb.astype(np.uint32)
    return 299 * rgb[..., 0] + 587 * rgb[..., 1] + 114 * rgb[..., 2]


def luminance(frames_rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B), rounded: uint8 [...] from [..., 3]."""
    return ((_luma_millis(frames_rgb) + 500) // 1000).astype(np.uint8)


@lru_cache(maxsize=8)
def _luma_to_palette_index(tint: str) -> np.ndarray:
    """uint8 [255001]: the tint entry of the display palette nearest to each luma x 1000."""
    tint_luma = _luma_millis(display_palette(tint)[:PALETTE_GRAY_LEVELS]).astype(np.int64)
    midpoints = (tint_luma[:-1] + tint_luma[1:]) / 2.0  # palette luma is non-decreasing
    table = np.searchsorted(midpoints, np.arange(255 * 1000 + 1), side="left").astype(np.uint8)
    table.setflags(write=False)
    return table


def _palette_indices(frames_rgb: np.ndarray, tint: str) -> np.ndarray:
    """uint8 [F, H, W] palette indices: annotation colours exactly, the rest by nearest luma."""
    indices = _luma_to_palette_index(tint)[_luma_millis(frames_rgb)]
    packed = (frames_rgb[..., 0].astype(np.uint32) << 16) | (
        frames_rgb[..., 1].astype(np.uint32) << 8
    ) | frames_rgb[..., 2]
    for offset, (r, g, b) in enumerate(ANNOTATION_COLORS):
        indices[packed == ((r << 16) | (g << 8) | b)] = PALETTE_GRAY_LEVELS + offset
    return indices


def _add_palette(ds: Dataset, tint: str) -> None:
    lut16 = display_palette(tint).astype("<u2") * 257  # 8-bit colour -> 16-bit entries
    for channel, name in enumerate(("Red", "Green", "Blue")):
        ds.add(DataElement(Tag(f"{name}PaletteColorLookupTableDescriptor"), "US", [256, 0, 16]))
        ds.add(DataElement(Tag(f"{name}PaletteColorLookupTableData"), "OW",
                           np.ascontiguousarray(lut16[:, channel]).tobytes()))


def describe_pixels(ds: Dataset, photometric: str, n_frames: int, rows: int, cols: int) -> None:
    """Image Pixel module for 8-bit unsigned pixels (NumberOfFrames only when n_frames > 1)."""
    ds.SamplesPerPixel = 3 if photometric in ("RGB", "YBR_FULL_422") else 1
    ds.PhotometricInterpretation = photometric
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    if n_frames > 1:
        ds.NumberOfFrames = n_frames
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0


def _jpeg_baseline_frames(native: np.ndarray, quality: int) -> list[bytes]:
    """One Pillow JPEG baseline stream per frame; colour frames are YCbCr 4:2:2."""
    streams = []
    for frame in native:
        buffer = io.BytesIO()
        options = {"subsampling": 1} if frame.ndim == 3 else {}  # 1 = 4:2:2
        Image.fromarray(frame).save(buffer, format="JPEG", quality=quality, **options)
        streams.append(buffer.getvalue())
    return streams


def set_native_pixel_data(ds: Dataset, native: np.ndarray) -> None:
    """Store an uncompressed little-endian array (uint8 -> OB, uint16 -> OW), padded to even."""
    data = native.tobytes()
    ds.PixelData = data + b"\x00" if len(data) % 2 else data
    ds["PixelData"].VR = "OB" if native.dtype == np.uint8 else "OW"


def add_pixel_data(ds: Dataset, frames_rgb: np.ndarray, profile: ScannerProfile) -> None:
    """Store display frames uint8 [F, H, W, 3] as the profile's photometric and compression.

    Sets the Image Pixel module, PixelData, LossyImageCompression (and ratio / method for JPEG
    baseline) and, when compressed, the file meta TransferSyntaxUID.
    """
    photometric, compression = profile.photometric, profile.compression
    n_frames, rows, cols = frames_rgb.shape[:3]
    describe_pixels(ds, photometric, n_frames, rows, cols)
    if photometric == "MONOCHROME2":
        native = luminance(frames_rgb)
    elif photometric == "PALETTE COLOR":
        native = _palette_indices(frames_rgb, profile.tint)
        _add_palette(ds, profile.tint)
    else:
        native = frames_rgb
    native = np.ascontiguousarray(native)
    transfer_syntax, plugin = SUPPORTED_ENCODINGS[(photometric, compression)]
    ds.LossyImageCompression = "00"
    if compression == "none":
        set_native_pixel_data(ds, native)
    elif compression == "jpeg_baseline":
        streams = _jpeg_baseline_frames(native, profile.jpeg_quality)
        ds.PixelData = encapsulate(streams, has_bot=n_frames > 1)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        ds.LossyImageCompression = "01"
        ratio = native.nbytes / sum(len(stream) for stream in streams)
        ds.LossyImageCompressionRatio = f"{ratio:.4g}"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    else:
        array = native[0] if n_frames == 1 else native
        ds.compress(transfer_syntax, array, encoding_plugin=plugin, generate_instance_uid=False)
