"""The demo pipeline at a small size, and the localisation measure it reports."""

import json
import math
import os
import re

import pandas as pd
import pytest
import torch

import lmac.listening as listening
import lmac.recipes.demo as demo
import lmac.scoring as scoring
from lmac.metrics import event_box, localization_ratio

REQUIRED_KEYS = (
    "classifier_acc",
    "fid_in",
    "AI",
    "AD",
    "AG",
    "FF",
    "SPS",
    "COMP",
    "AD_random_mask",
    "AD_all_ones_mask",
    "localization_ratio",
    "wall_time_s",
    # L-MAC's trust measures, at the top level beside its other metrics
    "energy_kept",
    "silent_share",
    "empty_keeps_decision",
    "fid_in_beyond_empty",
    "profile_cosine",
    "event_profile_cosine",
    "sensitivity_profile_cosine",
    "randomisation_similarity",
)


def real_event_boxes(synthetic_data, num_frames=431, num_bins=513):
    events = pd.read_csv(f"{synthetic_data['esc50_folder']}/meta/events.csv")
    return torch.stack([event_box(num_frames, num_bins, row, 186, 16000, 1024) for _, row in events.iterrows()])


def test_the_trivial_masks_are_scored_with_the_run_s_reference():
    from types import SimpleNamespace

    import speechbrain as sb

    from lmac.features import SpectralFeatures
    from lmac.mask_references import MeanSpectrumReference
    from lmac.metrics import fidelity_scores
    from lmac.scoring import MEASURES, ClipScoring
    from lmac.training.brain import InterpreterBrain

    weights = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    brain = SimpleNamespace(
        classify=lambda classifier_input: (classifier_input.mean(dim=1) @ weights, ()),
        input_from_log_mag=lambda log_mag, clip_log_mag=None: log_mag,
        mask_reference=MeanSpectrumReference(torch.linspace(0.5, 3.0, 6)),
        needs_empty_logits=lambda stage: False,
    )
    log_mag = torch.rand(2, 5, 6)
    features, logits = SpectralFeatures(None, log_mag, None), log_mag.mean(dim=1) @ weights
    reference = torch.linspace(0.5, 3.0, 6).expand(2, 5, 6)
    for value in (0.0, 0.7):  # the empty mask: R is classified (not silence); R fills what a mask removes
        mask = torch.full((2, 5, 6), value)
        # As the demo scores its trivial masks: the Brain's masked output, then the registry's measures.
        clip = ClipScoring(
            InterpreterBrain.masked_output(brain, None, features, logits, mask, sb.Stage.TEST), *[None] * 3
        )
        masked_in = mask * log_mag + (1 - mask) * reference
        masked_out = (1 - mask) * log_mag + mask * reference
        expected = fidelity_scores(logits, masked_in.mean(dim=1) @ weights, masked_out.mean(dim=1) @ weights)
        for name in ("AD", "AI", "FF", "fid_in"):
            score = MEASURES[name].score(clip)
            assert torch.allclose(score, expected[name], atol=1e-5), (name, value, score, expected[name])


def test_a_mask_on_the_event_box_scores_one_over_the_box_share(synthetic_data):
    boxes = real_event_boxes(synthetic_data)
    box_share = boxes.float().mean(dim=(1, 2))
    assert (box_share > 0).all() and (box_share < 0.35).all()
    ratio = localization_ratio(boxes.float(), boxes)
    assert torch.allclose(ratio, 1 / box_share, rtol=1e-5)
    assert torch.allclose(localization_ratio(torch.full(boxes.shape, 0.3), boxes), torch.ones(len(boxes)), rtol=1e-5)
    half_inside = boxes.float() + 0.5 * (~boxes).float() * box_share[:, None, None] / (1 - box_share[:, None, None])
    expected = (1 / (1 + 0.5)) / box_share  # two thirds of the mass inside the box
    assert torch.allclose(localization_ratio(half_inside, boxes), expected, rtol=1e-4)


def test_event_boxes_follow_the_stft_grid():
    box = event_box(431, 513, {"onset_s": 1.0, "offset_s": 2.0, "fmin_hz": 1000.0, "fmax_hz": 2000.0}, 186, 16000, 1024)
    frames = box.any(dim=1).nonzero().flatten()
    bins = box.any(dim=0).nonzero().flatten()
    assert (frames[0].item(), frames[-1].item()) == (math.ceil(16000 / 186), math.floor(32000 / 186))
    assert (bins[0].item(), bins[-1].item()) == (64, 128)


def test_the_demo_runs_end_to_end_at_a_small_size(tmp_path, capfd):
    summary = demo.main(
        [
            "--output_folder",
            str(tmp_path / "demo"),
            "--data_folder",
            str(tmp_path / "data"),
            "--n_classes",
            "2",
            "--clips_per_class",
            "5",
            "--noise_files",
            "3",
            "1",
            "1",
            "--width",
            "0.03125",
            "--classifier_epochs",
            "1",
            "--lmac_epochs",
            "1",
            "--finetuning_epochs",
            "1",
            "--l2i_epochs",
            "1",
            "--second_family",
            "ecapa",
            "--second_width",
            "0.0625",
            "--second_classifier_epochs",
            "1",
            "--second_lmac_epochs",
            "1",
            "--nmf_components",
            "8",
            "--batch_size",
            "2",
            "--num_workers",
            "0",
        ]
    )
    with open(tmp_path / "demo" / "summary.json", encoding="utf-8") as file:
        written = json.load(file)
    flat = {key: value for key, value in summary.items() if not isinstance(value, dict)}
    assert {key: written[key] for key in flat} == pytest.approx(flat)
    for domain in ("in_domain", "out_of_domain", "two_classes"):
        for run in ("base", "finetuned"):
            assert written[domain][run] == pytest.approx(summary[domain][run])
            assert set(written[domain][run]) == set(scoring.measure_names("noisy"))
            values = written[domain][run]
            # A listening ratio is missing (None) only where most interpretations are unheard.
            assert all(math.isfinite(value) for value in values.values() if value is not None), (domain, run)
            mostly_unheard = values["unheard_share"] > listening.MOSTLY_UNHEARD_SHARE
            # The clean clip's gain over the noise has no noise to measure with two classes mixed.
            not_applicable = {listening.CLEAN_CLIP_SIR_GAIN} if domain == "two_classes" else set()
            assert all(mostly_unheard or key in not_applicable for key, value in values.items() if value is None), (
                domain,
                run,
            )
            if domain == "two_classes":
                assert values[listening.CLEAN_CLIP_SIR_GAIN] is None
            elif not mostly_unheard:
                assert values[listening.CLEAN_CLIP_SIR_GAIN] is not None, (domain, run)
            assert math.isfinite(values["ideal_mask_sir_gain_db"]) and values["ideal_mask_sir_gain_db"] > 0
    assert set(written["step_seconds"]) == {
        "data",
        "classifier",
        "lmac",
        "lmac_test_and_export",
        "finetuning",
        "noisy_evaluations",
        "l2i_and_comparison",
        "second_family",
    }
    assert sum(written["step_seconds"].values()) <= written["wall_time_s"]
    finetuned_log = (tmp_path / "demo" / "lmac_finetuned" / "train_log.txt").read_text()
    assert "valid in_masks" in finetuned_log and "valid clean_energy_share" in finetuned_log
    for key in REQUIRED_KEYS:
        assert math.isfinite(written[key]), key
    assert written["localization_ratio_all_ones_mask"] == pytest.approx(1.0, rel=1e-4)
    interpretations = list((tmp_path / "demo" / "lmac" / "interpretations" / "test").glob("*/interpretation.wav"))
    assert len(interpretations) == 2
    export = sorted(os.listdir(tmp_path / "demo" / "lmac" / "export"))
    assert export == ["classifier.ckpt", "embedding_model.ckpt", "hyperparams.yaml", "label_encoder.ckpt", "psi.ckpt"]
    report = (tmp_path / "demo" / "lmac" / "interpretations" / "report.html").read_text()
    # Per clip, the input, the interpretation and its target (the clip's event), with the gain under them.
    assert report.count("<audio") == 6 and "localization_ratio" in report and report.count("<br>SIR gain ") == 2
    curves = re.findall(r'<a href="([^"]+)">training curves: ([^<]+)</a>', report)
    assert [text for _, text in curves] == ["classifier", "L-MAC", "fine-tuned L-MAC", "L2I"]
    for path, _ in curves:
        assert (tmp_path / "demo" / "lmac" / "interpretations" / path).is_file()
    with open(tmp_path / "demo" / "lmac" / "eval" / "comparison_clean.json", encoding="utf-8") as file:
        table = json.load(file)["methods"]
    assert list(table) == list(demo.lmac_eval.METHODS)
    # The comparison's L-MAC row (eval.py's pass) and the summary (train_lmac.py's test pass, and the demo's own
    # localisation of the masks) score the same checkpoint on the same clean clips.
    for key in ("fid_in", "AD", "SPS", "energy_kept", "silent_share", "sir_gain_db", "profile_cosine"):
        assert table["lmac"][key] == pytest.approx(written[key], rel=1e-4, abs=1e-6), key
    assert table["lmac"]["localization"] == pytest.approx(written["localization_ratio"], rel=1e-4)
    assert all(math.isfinite(table[method]["localization"]) for method in table)
    second = written["second_family"]
    assert second["family"] == "ecapa" and math.isfinite(second["classifier_acc"])
    assert list(second["comparison"]) == [method for method in demo.lmac_eval.METHODS if method != "l2i"]
    # The demo's log shows each comparison as written, its words about methods and classes included.
    console = "".join(capfd.readouterr())
    for family in ("", "ecapa"):
        assert (tmp_path / "demo" / family / "lmac" / "eval" / "comparison_clean.md").read_text() in console
    saved = (tmp_path / "demo" / "ecapa" / "classifier" / "hyperparams.yaml").read_text()
    assert "classifier_family: ecapa" in saved
