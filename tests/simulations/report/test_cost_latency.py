"""The report's model cost shows the exported model's latency measured at export (the bundle's
``latency`` block), and says "not measured" for a bundle exported before it was recorded."""

from __future__ import annotations

import json
from pathlib import Path

from tiny_models import TinyClassifier

from ecs_models.bundle import export_student
from ecs_models.bundle_format import read_bundle
from ecs_models.preprocessing import PreprocessConfig
from simulations.report import sections
from simulations.report.html import esc
from simulations.report.run_files import RunFiles


def test_the_model_cost_shows_the_measured_latency_or_says_not_measured(tmp_path: Path) -> None:
    bundle = tmp_path / "model"
    export_student(TinyClassifier(), bundle, name="tiny", size=16, threshold=0.5, target_sensitivity=0.95, val=None,
                   chosen_on="a test", preprocess=PreprocessConfig(output_size=24), run={"kind": "test"})
    latency = read_bundle(bundle).latency
    run = RunFiles(tmp_path, "centralized", bundle_dir=bundle)
    _, title, body = sections.cost(run, 16)
    assert title == "Model cost"
    assert f"p50 {latency['p50_ms']:.2f} ms" in body and f"p95 {latency['p95_ms']:.2f} ms" in body
    assert esc(latency["cpu"]) in body and "20 timed runs" in body and "exporting machine" in body
    document = json.loads((bundle / "operating_point.json").read_text())
    del document["latency"]
    (bundle / "operating_point.json").write_text(json.dumps(document))
    _, _, body = sections.cost(run, 16)
    assert "not measured" in body and "p50" not in body
