"""Helpers shared by tests: compose the real Hydra configs as the command-line apps do."""

from __future__ import annotations

from pathlib import Path


def compose(config_name: str, overrides: list[str] | None = None):
    """Compose a config from the installed ``configs`` package (as the CLIs do)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="configs", version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides or [])


def tiny_spec(*overrides: str):
    """The ``cohort=tiny`` preset as a CohortSpec, with extra Hydra overrides."""
    from omegaconf import OmegaConf

    from simulations.cohort.spec import cohort_spec_from_config

    cfg = compose("generate", ["cohort=tiny", *overrides])
    return cohort_spec_from_config(OmegaConf.to_container(cfg.cohort, resolve=True))


# A GAN small enough for unit tests (32x32, a few channels).
TINY_GAN = dict(image_size=32, mafe_width=4, mafe_depth=2, gen_width=4, gen_max_width=16, n_res_blocks=1,
                dynamic_kernels=2, disc_width=4, disc_stride2_layers=2, domain_width=4)


def dicom_sample_files(modalities: tuple[str, ...] = ("US", "MR")) -> list[tuple[str, Path, str]]:
    """(id, path, modality) of every file shipped with pydicom and pydicom-data (a dev dependency:
    missing it must fail, not skip) whose Modality header is one of ``modalities``."""
    import warnings

    import data_store
    import pydicom
    import pydicom.data

    roots = [Path(pydicom.data.__file__).parent / "test_files", Path(data_store.__file__).parent / "data"]
    found = []
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the sample set is full of deliberate oddities
                try:
                    modality = str(pydicom.dcmread(path, force=True, stop_before_pixels=True).get("Modality", ""))
                except Exception:
                    continue
            if modality in modalities:
                found.append((str(path.relative_to(root)), path, modality))
    return found
