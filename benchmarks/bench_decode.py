"""Decode + preprocess throughput, cold (cache miss) vs warm (cache hit), in one run.

    python benchmarks/bench_decode.py [--data-dir DIR] [--repeat N] [--output-size S]

Default input: every ultrasound file shipped with pydicom and pydicom-data (found by reading
the Modality header). Cold = read + sha256 + decode + preprocess + cache write into a fresh
cache folder; warm = read + sha256 + cache read. Images/s counts preprocessed frames.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
import warnings
from pathlib import Path

import pydicom
import pydicom.data

from client.data.cache import PreprocessedCache
from client.data.decode import DicomDecodeError
from client.data.pipeline import load_preprocessed
from client.data.preprocess import PreprocessConfig


def sample_ultrasound_files() -> list[Path]:
    """US files of pydicom's test set and of pydicom-data (when installed)."""
    roots = [Path(pydicom.data.__file__).parent / "test_files"]
    try:
        import data_store

        roots.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    found = []
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # deliberate oddities in the sample set
                try:
                    header = pydicom.dcmread(path, force=True, stop_before_pixels=True)
                except Exception:
                    continue
            if str(header.get("Modality", "")) == "US":
                found.append(path)
    return found


def _pass(files: list[Path], cfg: PreprocessConfig, cache: PreprocessedCache) -> tuple[float, int, int]:
    """(seconds, frames, files that failed) of one pass over ``files``."""
    frames = failed = 0
    start = time.perf_counter()
    for path in files:
        try:
            frames += load_preprocessed(path, cfg, cache).image.shape[0]
        except DicomDecodeError:
            failed += 1
    return time.perf_counter() - start, frames, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder of DICOM files (default: pydicom / pydicom-data US files)")
    parser.add_argument("--repeat", type=int, default=3, help="passes of each kind (best is kept)")
    parser.add_argument("--output-size", type=int, default=256, help="square output side, px")
    parser.add_argument("--frame-policy", choices=("middle", "all", "stride"), default="middle")
    args = parser.parse_args()
    files = (sorted(p for p in args.data_dir.rglob("*") if p.is_file())
             if args.data_dir else sample_ultrasound_files())
    cfg = PreprocessConfig(frame_policy=args.frame_policy, output_size=args.output_size)
    print(f"files: {len(files)}  config: {cfg}")
    print(f"python {platform.python_version()}  pydicom {pydicom.__version__}  "
          f"cpu: {platform.processor() or platform.machine()}")
    cold_best = warm_best = float("inf")
    frames = failed = 0
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-cache-") as folder:
            cache = PreprocessedCache(folder)
            cold, frames, failed = _pass(files, cfg, cache)
            warm, warm_frames, _ = _pass(files, cfg, cache)
            assert warm_frames == frames
        cold_best, warm_best = min(cold_best, cold), min(warm_best, warm)
    print(f"frames per pass: {frames}  files failed (quarantined): {failed}")
    print(f"cold (decode+preprocess+cache write): {cold_best:.3f} s  {frames / cold_best:.1f} images/s")
    print(f"warm (cache hit):                     {warm_best:.3f} s  {frames / warm_best:.1f} images/s")
    print(f"speed-up warm/cold: {cold_best / warm_best:.1f}x  (best of {args.repeat} passes each)")


if __name__ == "__main__":
    main()
