"""Scanner profiles: how one center's ultrasound machine images and stores a B-mode frame.

Each center of the synthetic cohort uses one profile. The fields are the heterogeneity knobs of
real TVUS fleets (frequency, gain, dynamic range, TGC, speckle reduction, matrix and pixel
size, colour encoding, compression, cine, annotation layout); typical ranges are in
``shared/reference/realism.md`` section 2.5. Profiles are data: add one to
:data:`SCANNER_PROFILES` and name it in a cohort config.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["PHOTOMETRICS", "COMPRESSIONS", "ScannerProfile", "SCANNER_PROFILES", "get_scanner_profile"]

PHOTOMETRICS = ("MONOCHROME2", "RGB", "YBR_FULL_422", "PALETTE COLOR")
COMPRESSIONS = ("none", "rle", "jpeg_baseline", "jpeg_ls", "jpeg2000")


@dataclass(frozen=True)
class ScannerProfile:
    """One ultrasound scanner + probe + preset, as a center uses it."""

    manufacturer: str  # DICOM Manufacturer (0008,0070)
    model: str  # DICOM ManufacturerModelName (0008,1090)
    probe: str  # DICOM TransducerData (0018,5010)
    center_frequency_mhz: float = 7.0  # transmit centre frequency, 5-9 MHz for endocavitary probes
    fractional_bandwidth: float = 0.75  # -6 dB bandwidth / centre frequency
    sector_angle_deg: float = 130.0  # full field-of-view angle of the fan
    depth_mm: float = 72.0  # imaging depth from the probe face
    apex_radius_mm: float = 10.0  # micro-convex radius: the fan starts this far from its apex
    gain_db: float = 0.0  # overall receive gain offset, about +-6 dB between centers
    dynamic_range_db: float = 60.0  # log-compression display range, 40-80 dB
    tgc_compensation: float = 0.9  # fraction of the nominal attenuation the TGC undoes (0.7-1.1)
    gamma: float = 1.0  # gray-map exponent applied after log compression (0.7-1.3)
    speckle_reduction: str = "none"  # "none" | "median" | "gaussian" post-processing
    speckle_reduction_strength: float = 0.0  # 0 = off; filter size / blend weight in [0, 1]
    noise_floor_db: float = -60.0  # electronic noise re the strongest (specular) echoes, dB
    rows: int = 480  # stored image matrix (rows x cols), the fan plus the annotation margins
    cols: int = 640
    pixel_size_mm: float = 0.25  # isotropic pixel size of the scan-converted fan, mm
    photometric: str = "MONOCHROME2"  # one of PHOTOMETRICS
    compression: str = "none"  # one of COMPRESSIONS
    jpeg_quality: int = 90  # for lossy JPEG baseline
    tint: str = "gray"  # display colour map for colour photometrics: "gray" | "sepia" | "blue"
    cine_frames: int = 1  # > 1 writes an Ultrasound Multi-frame cine
    frame_time_ms: float = 33.3  # cine frame interval
    annotation_layout: str = "top_left"  # where burned-in text sits: "top_left" | "top_bar" | "side"
    caliper_probability: float = 0.5  # chance that a frame carries endometrial-thickness calipers

    def __post_init__(self) -> None:
        if self.photometric not in PHOTOMETRICS:
            raise ValueError(f"photometric {self.photometric!r} not in {PHOTOMETRICS}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression {self.compression!r} not in {COMPRESSIONS}")
        if self.compression == "jpeg_baseline" and self.photometric not in ("YBR_FULL_422", "MONOCHROME2"):
            raise ValueError("JPEG baseline stores YBR_FULL_422 (colour) or MONOCHROME2 only")
        if self.cine_frames < 1:
            raise ValueError("cine_frames must be >= 1")


SCANNER_PROFILES: dict[str, ScannerProfile] = {
    # University hospital, premium cart scanner: grayscale, JPEG lossless-class quality (JPEG-LS).
    "premium_mono": ScannerProfile(
        manufacturer="Philips Medical Systems", model="EPIQ 7C", probe="C10-3v",
        center_frequency_mhz=7.5, fractional_bandwidth=0.85, sector_angle_deg=130.0,
        depth_mm=70.0, gain_db=1.0, dynamic_range_db=65.0, tgc_compensation=0.95, gamma=1.0,
        speckle_reduction="gaussian", speckle_reduction_strength=0.3, noise_floor_db=-65.0,
        rows=600, cols=800, pixel_size_mm=0.2, photometric="MONOCHROME2", compression="jpeg_ls",
        annotation_layout="top_bar",
    ),
    # Regional hospital, mid-range scanner storing RGB screenshots, uncompressed.
    "midrange_rgb": ScannerProfile(
        manufacturer="GE Healthcare", model="Voluson P8", probe="RIC5-9-D",
        center_frequency_mhz=6.5, fractional_bandwidth=0.75, sector_angle_deg=125.0,
        depth_mm=75.0, gain_db=-2.0, dynamic_range_db=55.0, tgc_compensation=0.85, gamma=1.15,
        speckle_reduction="median", speckle_reduction_strength=0.5, noise_floor_db=-58.0,
        rows=480, cols=640, pixel_size_mm=0.3, photometric="RGB", compression="none",
        tint="sepia", annotation_layout="top_left",
    ),
    # Community hospital: portable scanner, colour JPEG baseline cines (like SonoSite files).
    "portable_ybr_cine": ScannerProfile(
        manufacturer="SonoSite, Inc.", model="Edge II", probe="ICTx",
        center_frequency_mhz=6.0, fractional_bandwidth=0.7, sector_angle_deg=120.0,
        depth_mm=80.0, gain_db=3.0, dynamic_range_db=50.0, tgc_compensation=0.75, gamma=0.85,
        speckle_reduction="none", noise_floor_db=-52.0,
        rows=480, cols=640, pixel_size_mm=0.35, photometric="YBR_FULL_422",
        compression="jpeg_baseline", jpeg_quality=85, tint="blue", cine_frames=4,
        annotation_layout="side",
    ),
    # Older scanner with a palette-colour display, RLE compressed (like the Aloka/CX50 files).
    "legacy_palette": ScannerProfile(
        manufacturer="ALOKA CO., LTD.", model="SSD-4000", probe="UST-9124",
        center_frequency_mhz=5.0, fractional_bandwidth=0.65, sector_angle_deg=115.0,
        depth_mm=80.0, gain_db=-4.0, dynamic_range_db=45.0, tgc_compensation=0.7, gamma=1.25,
        speckle_reduction="none", noise_floor_db=-50.0,
        rows=480, cols=640, pixel_size_mm=0.4, photometric="PALETTE COLOR", compression="rle",
        tint="sepia", annotation_layout="top_left",
    ),
    # Primary-care clinic: compact scanner, grayscale JPEG 2000.
    "clinic_j2k": ScannerProfile(
        manufacturer="Mindray", model="DC-40", probe="V11-3HU",
        center_frequency_mhz=6.5, fractional_bandwidth=0.7, sector_angle_deg=130.0,
        depth_mm=72.0, gain_db=2.0, dynamic_range_db=60.0, tgc_compensation=0.8, gamma=1.05,
        speckle_reduction="median", speckle_reduction_strength=0.3, noise_floor_db=-55.0,
        rows=480, cols=640, pixel_size_mm=0.3, photometric="MONOCHROME2", compression="jpeg2000",
        annotation_layout="top_bar",
    ),
    # Teaching hospital, high-frequency probe, RGB JPEG 2000-free uncompressed grayscale.
    "highfreq_mono": ScannerProfile(
        manufacturer="Samsung Medison", model="HERA W10", probe="EV2-10A",
        center_frequency_mhz=9.0, fractional_bandwidth=0.9, sector_angle_deg=135.0,
        depth_mm=62.0, gain_db=0.0, dynamic_range_db=70.0, tgc_compensation=1.05, gamma=0.95,
        speckle_reduction="gaussian", speckle_reduction_strength=0.5, noise_floor_db=-62.0,
        rows=600, cols=800, pixel_size_mm=0.15, photometric="MONOCHROME2", compression="none",
        annotation_layout="side",
    ),
}


def get_scanner_profile(name: str, **overrides: object) -> ScannerProfile:
    """Return the named profile, with ``overrides`` (``None`` values ignored) applied."""
    if name not in SCANNER_PROFILES:
        raise KeyError(f"unknown scanner profile {name!r}; known: {sorted(SCANNER_PROFILES)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(SCANNER_PROFILES[name], **changes)
