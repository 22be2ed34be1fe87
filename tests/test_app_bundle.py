"""The Flower app bundle (FAB) a coordinator ships to hospitals holds the app's packages and no
research harness: its ServerApp and ClientApp import without ``simulations`` (issue 14)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_apps_import_from_the_bundles_packages_alone(tmp_path: Path) -> None:
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["fab-include"]
    assert not any(p.startswith(("simulations", "tests", "benchmarks")) for p in patterns), patterns
    for pattern in patterns:  # copy what the FAB would carry
        for path in REPO.glob(pattern):
            target = tmp_path / path.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    # the bundle's folder first on the path: its packages are found before the editable install's
    code = ("import sys; import server.app, client.app; "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('simulations', 'tests')], 'harness imported'; "
            "print(server.app.__file__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                            env={"PYTHONPATH": str(tmp_path), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-1500:]
    assert result.stdout.strip().startswith(str(tmp_path)), result.stdout
