"""The benchmark at a tiny size: it runs and reports every measure, with sane values."""

import json
import math

import benchmark

KEYS = (
    "train_step_s_per_clip", "train_floor_s_per_clip", "train_step_over_floor", "train_data_wait_share",
    "eval_step_s_per_clip", "eval_floor_s_per_clip", "eval_step_over_floor", "eval_data_wait_share",
    "interpret_5s_latency_s", "interpret_5s_with_outputs_s", "peak_memory_mb",
)  # fmt: skip


def test_the_benchmark_reports_every_measure(tmp_path):
    output = tmp_path / "bench.json"
    results = benchmark.main([
        "--config", "demo", "--iterations", "1", "--batch_size", "2", "--num_workers", "0",
        "--clips_per_class", "5", "--data_folder", str(tmp_path / "data"), "--output", str(output),
    ])  # fmt: skip
    written = json.loads(output.read_text())
    assert written == results and written["config"] == "demo" and written["batch_size"] == 2
    for key in KEYS:
        assert math.isfinite(written[key]) and written[key] >= 0, key
    assert written["train_step_s_per_clip"] > 0 and written["train_floor_s_per_clip"] > 0
    ratio = written["train_step_s_per_clip"] / written["train_floor_s_per_clip"]
    assert math.isclose(written["train_step_over_floor"], ratio, rel_tol=1e-6)
    assert 0 <= written["train_data_wait_share"] < 1 and 0 <= written["eval_data_wait_share"] < 1
    assert written["interpret_5s_with_outputs_s"] >= written["interpret_5s_latency_s"]
