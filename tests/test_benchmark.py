"""The benchmark at a tiny size: it runs and reports every measure, with sane values."""

import json
import math
import warnings

import pytest
import torch

import lmac.recipes.benchmark as benchmark

KEYS = (
    "train_step_s_per_clip",
    "train_floor_s_per_clip",
    "train_step_over_floor",
    "train_data_wait_share",
    "eval_step_s_per_clip",
    "eval_floor_s_per_clip",
    "eval_step_over_floor",
    "eval_data_wait_share",
    "eval_scoring_share",
    "eval_randomisation_share",
    "interpret_5s_latency_s",
    "interpret_5s_with_outputs_s",
    "peak_memory_mb",
)


def test_the_benchmark_reports_every_measure(tmp_path):
    output = tmp_path / "bench.json"
    results = benchmark.main(
        [
            "--config",
            "demo",
            "--iterations",
            "1",
            "--batch_size",
            "2",
            "--num_workers",
            "0",
            "--clips_per_class",
            "5",
            "--data_folder",
            str(tmp_path / "data"),
            "--output",
            str(output),
        ]
    )
    written = json.loads(output.read_text())
    assert written == results and written["config"] == "demo" and written["batch_size"] == 2
    assert (written["device"], written["precision"]) == ("cpu", "fp32") and "train_clips_per_s" not in written
    assert "train_syncs_per_step" not in written, "synchronisations are counted on CUDA only"
    for key in KEYS:
        assert math.isfinite(written[key]) and written[key] >= 0, key
    assert written["train_step_s_per_clip"] > 0 and written["train_floor_s_per_clip"] > 0
    assert 0 <= written["train_data_wait_share"] < 1 and 0 <= written["eval_data_wait_share"] < 1
    assert 0 < written["eval_scoring_share"] < 1  # the scorer is part of the evaluation step, not all of it
    assert 0 < written["eval_randomisation_share"] < written["eval_scoring_share"]  # the cascade, part of the scorer
    assert written["interpret_5s_with_outputs_s"] >= written["interpret_5s_latency_s"]


@pytest.mark.parametrize("train", [True, False])
def test_the_floor_runs_under_the_steps_autocast(synthetic_data, tmp_path, train):
    brain, _, loader = benchmark.build("demo", synthetic_data, str(tmp_path), 2, 0, "cpu", "bf16")
    autocast_dtypes = []
    classify = brain.classify

    def recording_classify(mel_input):
        enabled = torch.is_autocast_enabled("cpu")
        autocast_dtypes.append(torch.get_autocast_dtype("cpu") if enabled else None)
        return classify(mel_input)

    brain.classify = recording_classify
    seconds = benchmark.floor_times(brain, next(iter(loader)), train)
    assert seconds > 0
    assert (
        len(autocast_dtypes) == 8
    )  # compute_forward's 4 passes (input, masked-in, masked-out, empty), then the floor's
    assert set(autocast_dtypes) == {torch.bfloat16}
    assert not torch.is_autocast_enabled("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where no GPU is visible")
def test_a_cuda_device_without_a_gpu_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit):
        benchmark.main(["--device", "cuda", "--data_folder", str(tmp_path / "data")])
    assert "--device cuda: no CUDA GPU is visible" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_synchronisations_are_counted_from_the_sync_debug_warnings_and_the_mode_is_restored(monkeypatch):
    modes = ["default"]
    monkeypatch.setattr(torch.cuda, "get_sync_debug_mode", lambda: modes[-1])
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)

    def step_with_two_syncs():
        assert modes[-1] == "warn"
        for _ in range(2):
            warnings.warn(benchmark.SYNC_WARNING)  # one line warning twice, as in a loop: counted twice
        warnings.warn("an unrelated warning")

    assert benchmark.count_synchronisations(step_with_two_syncs) == 2
    assert modes == ["default", "warn", "default"]


def test_the_long_recording_measure_interprets_the_whole_recording(tmp_path):
    output = tmp_path / "long.json"
    results = benchmark.main(["--config", "demo", "--long_file_minutes", "0.2", "--output", str(output)])
    assert json.loads(output.read_text()) == results
    assert results["recording_minutes"] == 0.2 and results["windows"] == 4  # 12 s: windows at 0, 2.5, 5 and 7.5 s
    assert results["interpretation_mb"] * 2**20 == pytest.approx(44 + 12 * 16000 * 2, abs=2)  # 16-bit mono WAV
    assert results["peak_memory_mb"] >= results["peak_memory_mb_before"] > 0
    assert results["real_time_factor"] == pytest.approx(results["interpret_s"] / 12)
