"""The robustness sweep at a tiny size: its tables come from the runs' own files, the chosen fold is scored, and a
second pass reuses what is done."""

import json

import pytest

import lmac.recipes.sweep as sweep
from lmac.checks import SettingError

TINY = [
    "--n_classes",
    "2",
    "--clips_per_class",
    "5",
    "--noise_files",
    "3",
    "1",
    "1",
    "--batch_size",
    "4",
    "--num_workers",
    "0",
    "--ig_steps",
    "2",
]


def test_a_tiny_sweep_scores_the_validation_fold_and_reuses_its_runs(tmp_path, monkeypatch):
    monkeypatch.setitem(sweep.FAMILY_RUNS, "cnn14", {"width": 1 / 32, "classifier_epochs": 1, "lmac_epochs": 1})
    argv = [
        "--output_folder",
        str(tmp_path),
        "--seeds",
        "3",
        "--families",
        "cnn14",
        "--fold",
        "valid",
        "--conditions",
        "clean",
        "wham",
        *TINY,
    ]
    results = sweep.main(argv)
    run = tmp_path / "seed3" / "cnn14"
    manifest = json.loads((run / "lmac" / "manifests" / "test.json").read_text())
    assert manifest and {entry["fold"] for entry in manifest.values()} == {
        4
    }  # the validation fold, read as eval's test
    per_class = json.loads((run / "lmac" / "eval_valid" / "clean" / "metrics_clean_per_class.json").read_text())
    classes = results["cnn14"]["3"]["classes"]
    assert set(classes) == set(per_class) and len(classes) == 2
    for name, stats in classes.items():
        assert stats == {key: per_class[name][key] for key in sweep.PER_CLASS}
    comparison = json.loads((run / "lmac" / "eval_valid" / "comparison_clean.json").read_text())["methods"]
    assert results["cnn14"]["3"]["methods"]["gradcam"]["AD"] == comparison["gradcam"]["AD"]
    assert results["cnn14"]["3"]["event_fid_in"] == comparison["lmac"]["event_fid_in"]
    assert results["cnn14"]["3"]["sensitivity_profile_cosine"] == comparison["lmac"]["sensitivity_profile_cosine"]
    markdown = (tmp_path / "sweep_valid.md").read_text()
    assert "## cnn14 (1 seeds: 3)" in markdown and "| gradcam |" in markdown
    lmac = comparison["lmac"]
    clips = json.loads((run / "lmac" / "manifests" / "test.json").read_text()).values()
    decisions = json.loads((run / "lmac" / "eval_valid" / "clean" / "metrics_clean.json").read_text())
    accuracy = decisions["acc"]  # over the clips, not a mean over classes
    assert len(clips) * accuracy == pytest.approx(round(len(clips) * accuracy))
    assert f"| 3 | {accuracy:.2f} | {lmac['event_fid_in']:.2f} | {lmac['sensitivity_profile_cosine']:.2f} |" in markdown
    wham = json.loads((run / "lmac" / "eval_valid" / "comparison_wham.json").read_text())["methods"]
    listening = results["cnn14"]["3"]["listening"]["wham"]
    assert listening["lmac"]["ideal_mask_sir_gain_db"] == wham["lmac"]["ideal_mask_sir_gain_db"]
    assert set(listening) == set(wham) and "all_ones_mask" in listening
    ideal = wham["gradcam"]["ideal_mask_sir_gain_db"]
    assert f"{ideal:.3g} ± 0; {ideal:.3g}" in markdown.split("Listening, wham")[1]
    classifier_log = run / "classifier" / "train_log.txt"
    written = classifier_log.stat().st_mtime_ns
    assert sweep.main(argv) == results  # a second pass trains and evaluates nothing again
    assert classifier_log.stat().st_mtime_ns == written
    # Another number of loading processes computes the same runs: they are reused too.
    assert sweep.main([*argv, "--num_workers", "1"]) == results
    assert classifier_log.stat().st_mtime_ns == written
    record = json.loads((run / "lmac" / "test_per_class.json.sweep.json").read_text())
    assert "--lr" in record["flags"] and record["code"]
    with pytest.raises(SettingError, match=r"comparison_clean.json was made with other flags \(--ig_steps 2, now 3\)"):
        sweep.main([*argv[:-1], "3"])  # another --ig_steps: the comparisons are not those of these settings


def test_the_targets_flag_a_class_the_classifier_knows_whose_masks_go_silent():
    classes = {
        "kept": {"acc": 1.0, "fid_in": 1.0, "silent_share": 0.0},
        "silent": {"acc": 1.0, "fid_in": 0.9, "silent_share": 0.5},
        "lost": {"acc": 0.8, "fid_in": 0.5, "silent_share": 0.0},
        "unknown_to_the_classifier": {"acc": 0.25, "fid_in": 0.0, "silent_share": 1.0},
    }
    assert sweep.failing_classes(classes) == ["silent", "lost"]
    assert sweep.worst_class(classes) == ("lost", 0.5)


def test_the_models_train_for_the_family_s_epochs_unless_the_flags_give_others():
    own, demo_args = sweep.parse_args(["--families", "conv2d", "ecapa"])
    args = sweep.seed_args(demo_args, "out", 1, "conv2d", own.classifier_epochs, own.lmac_epochs)
    assert (args.classifier_epochs, args.lmac_epochs) == (30, 6)
    args = sweep.seed_args(demo_args, "out", 1, "ecapa", own.classifier_epochs, own.lmac_epochs)
    assert (args.classifier_epochs, args.lmac_epochs) == (10, 3)
    own, demo_args = sweep.parse_args(["--classifier_epochs", "40"])
    args = sweep.seed_args(demo_args, "out", 2, "cnn14", own.classifier_epochs, own.lmac_epochs)
    assert (args.classifier_epochs, args.lmac_epochs, args.seed) == (40, 6, 2)
    own, demo_args = sweep.parse_args(["--lmac_epochs", "12"])
    args = sweep.seed_args(demo_args, "out", 3, "ecapa", own.classifier_epochs, own.lmac_epochs)
    assert (args.classifier_epochs, args.lmac_epochs, args.seed) == (10, 12, 3)
