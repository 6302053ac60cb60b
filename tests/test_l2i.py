"""L2I: the NMF dictionary, the relevance of components, training, and eval.py --compare."""

import json
import math
import os
import random

import pandas
import pytest
import torch
from conftest import tiny_run_flags
from speechbrain.lobes.models.L2I import NMFDecoderAudio, Theta

import lmac.listening as listening
import lmac.loading as loading
import lmac.methods as mask_methods
import lmac.recipes.eval as lmac_eval
import lmac.recipes.train_l2i as train_l2i
import lmac.recipes.train_lmac as train_lmac
import lmac.recipes.train_nmf as train_nmf
import lmac.scoring as scoring
import lmac.training.lmac as lmac_brain
import lmac.training.nmf as nmf
from lmac.audio.io import peak_normalize, read_audio_mono
from lmac.features import spectral_features

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HPARAMS = os.path.join(REPO, "hparams", "lmac_cnn14.yaml")
L2I_HPARAMS = os.path.join(REPO, "hparams", "l2i_cnn14.yaml")
COMPONENTS = 12


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    """An L-MAC run (1 epoch) and, in its own folder, an NMF dictionary and L2I (2 epochs) on the same classifier."""
    root = tmp_path_factory.mktemp("l2i")
    data = tiny_data
    l2i_flags = [
        *tiny_run_flags(data["esc50_folder"], root / "l2i"),
        "--nmf_components",
        str(COMPONENTS),
        "--device",
        "cpu",
    ]
    flags = [*tiny_run_flags(data["esc50_folder"], root / "run"), "--l2i_folder", str(root / "l2i"), "--device", "cpu"]
    train_lmac.main([HPARAMS, *flags, "--number_of_epochs", "1"])
    report = train_nmf.main([L2I_HPARAMS, *l2i_flags, "--nmf_iterations", "100"])
    brain = train_l2i.main([L2I_HPARAMS, *l2i_flags, "--number_of_epochs", "2"])
    return {"root": root, "data": data, "flags": flags, "l2i_flags": l2i_flags, "report": report, "l2i": brain}


def test_dictionary_is_non_negative_and_reconstructs_training_spectrograms(run):
    dictionary = torch.load(run["root"] / "l2i" / "nmf" / "nmf_decoder.ckpt")["W"]
    assert dictionary.shape == (513, COMPONENTS)
    assert dictionary.min() >= 0
    # Reconstruct one training clip independently: non-negative least squares by projected gradient.
    brain = run["l2i"]
    audio = os.path.join(run["data"]["esc50_folder"], "audio")
    first_training_clip = os.path.join(audio, sorted(name for name in os.listdir(audio) if name.startswith("1-"))[0])
    waveform = peak_normalize(read_audio_mono(first_training_clip, 16000))
    features = spectral_features(waveform[None], brain.hparams.compute_stft, brain.hparams.classifier_input)
    log_mag = features.log_mag[0].T  # [freq, frames]
    activations = torch.zeros(COMPONENTS, log_mag.shape[1])
    step = 1.0 / torch.linalg.matrix_norm(dictionary.T @ dictionary, ord=2)
    for _ in range(1000):
        activations = (activations - step * dictionary.T @ (dictionary @ activations - log_mag)).clamp_min(0)
    error = float((log_mag - dictionary @ activations).norm() / log_mag.norm())
    assert error < 0.5
    assert 0 < run["report"]["relative_error"] < 0.5


def test_more_components_reconstruct_better():
    generator = torch.Generator().manual_seed(3)
    spectrogram = torch.rand(20, 200, generator=generator) ** 3
    errors = [
        nmf.relative_error(spectrogram, *nmf.nmf_multiplicative(spectrogram, k, 200, generator)) for k in (1, 4, 16)
    ]
    assert errors[0] > errors[1] > errors[2]


def test_relevance_is_theta_weight_times_pooled_activation():
    theta = Theta(n_comp=3, T=4, num_classes=2)
    activations = torch.rand(2, 3, 4)
    decision = torch.tensor([1, 0])
    relevance = mask_methods.component_relevance(theta, activations, decision)
    pooling = theta.hard_att.weight[0]  # [T]
    weights = theta.classifier[0].weight  # [classes, K]
    for example in range(2):
        for component in range(3):
            expected = weights[decision[example], component] * (activations[example, component] * pooling).sum()
            assert torch.isclose(relevance[example, component], expected, atol=1e-6)


def test_l2i_training_wrote_checkpoints_and_finite_scores(run):
    stats = run["l2i"].last_stage_stats
    assert all(math.isfinite(value) for value in stats.values())
    assert os.path.isfile(run["root"] / "l2i" / "train_log.txt")
    checkpoints = os.listdir(run["root"] / "l2i" / "save")
    assert any(name.startswith("CKPT") for name in checkpoints)


def test_l2i_mask_is_the_share_of_the_reconstruction_the_relevant_components_explain(run):
    hparams = run["l2i"].hparams
    mask_method = run["l2i"].own_mask_method()
    activations = torch.rand(1, COMPONENTS, 20)
    mask = mask_method.mask_of(activations, torch.tensor([0]))
    # The relevance written out: theta's weight of class 0 times the attention-pooled activation.
    pooling = mask_method.theta.hard_att.weight[0, : activations.shape[2]]  # the frames past 20 are zero-padded
    relevance = mask_method.theta.classifier[0].weight[0] * (activations[0] * pooling).sum(dim=1)
    chosen = (relevance > 0) & (relevance >= hparams.relevance_th * relevance.max())
    dictionary = mask_method.nmf_decoder.return_W()
    relevant = (dictionary[:, chosen] @ activations[0, chosen]).T  # [frames, freq]
    full = (dictionary @ activations[0]).T
    assert chosen.any() and mask.min() >= 0 and mask.max() <= 1
    torch.testing.assert_close(mask[0], torch.where(full > 0, relevant / full, torch.zeros_like(full)))


def test_compare_writes_one_row_per_method_with_finite_values(run, monkeypatch):
    methods = list(lmac_eval.METHODS)
    channels_last_during_evaluation = []
    evaluate = lmac_brain.LMAC.evaluate

    def recording_evaluate(brain, *args, **kwargs):
        weight = brain.modules.psi.convt1.weight
        channels_last_during_evaluation.append(
            weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
        )
        return evaluate(brain, *args, **kwargs)

    monkeypatch.setattr(lmac_brain.LMAC, "evaluate", recording_evaluate)
    l2i_loads = []
    load_l2i_run = mask_methods.load_l2i_run
    monkeypatch.setattr(mask_methods, "load_l2i_run", lambda *args: l2i_loads.append(args) or load_l2i_run(*args))
    lmac_eval.main(
        [HPARAMS, *run["flags"], "--compare", ",".join(methods), "--ig_steps", "4", "--smoothgrad_samples", "2"]
    )
    assert len(l2i_loads) == 1, "each method is built once per run"
    folder = run["root"] / "run" / "eval"
    with open(folder / "comparison_clean.json", encoding="utf-8") as file:
        table = json.load(file)["methods"]
    assert list(table) == methods
    # Forward-only methods run with channels-last weights, the gradient baselines in the default order; the
    # reference rows run first (their pass computes the scores every method shares).
    evaluated = sorted(methods, key=lambda method: method not in lmac_eval.REFERENCE_ROWS)
    assert channels_last_during_evaluation == [mask_methods.MASK_METHODS[method].forward_only for method in evaluated]
    columns = set(scoring.measure_names("comparison"))
    unheard = columns - set(listening.NAN_WHEN_UNHEARD)
    for method, row in table.items():
        # A ratio of what is heard is missing exactly where most interpretations are unheard.
        expected = columns if row["unheard_share"] <= listening.MOSTLY_UNHEARD_SHARE else unheard
        expected -= {listening.OTHER_CLASS_SIR_GAIN}  # only with two classes mixed
        assert set(row) == expected, method
        assert all(math.isfinite(value) for value in row.values()), method
        assert row["seconds_per_clip"] > 0
    markdown = (folder / "comparison_clean.md").read_text(encoding="utf-8")
    assert all(f"| {method} |" in markdown for method in methods)
    for method, row in table.items():  # a method whose interpretations are mostly silent is called so under the table
        said = f"- {method}: {100 * row['silent_share']:.0f}% of its interpretations are near-silent" in markdown
        assert said == (row["silent_share"] >= 0.5 and method not in lmac_eval.REFERENCE_ROWS), method
    # Two paths to one input each: the empty mask's masked-in input (masking with zeros) is the reference input the
    # trust measures classify on their own (classify_empty); the all-ones mask's, rebuilt from the log-magnitude in
    # the clip's normalisation, is the classifier's own input.
    empty, ones = table["empty_mask"], table["all_ones_mask"]
    assert empty["fid_in"] == empty["empty_keeps_decision"]
    assert ones["fid_in"] == 1.0 and ones["AD"] == pytest.approx(0.0, abs=1e-4)
    # Per class, next to the metrics: the clip-weighted mean of the classes' accuracies is the overall one.
    per_class = json.loads((folder / "clean" / "metrics_clean_per_class.json").read_text(encoding="utf-8"))
    meta = pandas.read_csv(os.path.join(run["data"]["esc50_folder"], "meta", "esc50.csv"))
    counts = meta[meta["fold"] == 5]["category"].value_counts()
    assert set(per_class) == set(counts.index)
    weighted = sum(per_class[name]["acc"] * counts[name] for name in counts.index) / counts.sum()
    overall = json.loads((folder / "clean" / "metrics_clean.json").read_text(encoding="utf-8"))
    assert weighted == pytest.approx(overall["acc"])
    for method in methods[1:]:
        clip_folders = os.listdir(folder / method / "clean" / "test")
        assert len(clip_folders) == 2
        assert os.path.isfile(folder / method / "clean" / "test" / clip_folders[0] / "interpretation.wav")


def test_with_two_classes_mixed_a_class_conditional_method_is_also_scored_on_the_class_not_decided(run):
    lmac_eval.main([HPARAMS, *run["flags"], "--compare", "lmac,gradcam", "--overlap_type", "class_mixtures"])
    with open(run["root"] / "run" / "eval" / "comparison_class_mixtures.json", encoding="utf-8") as file:
        table = json.load(file)["methods"]
    assert listening.OTHER_CLASS_SIR_GAIN not in table["lmac"]  # L-MAC interprets the decision only
    assert math.isfinite(table["gradcam"][listening.OTHER_CLASS_SIR_GAIN])


def test_a_baseline_interprets_a_file(run):
    audio = os.path.join(run["data"]["esc50_folder"], "audio")
    path = os.path.join(audio, sorted(os.listdir(audio))[0])
    failed = lmac_eval.main([HPARAMS, *run["flags"], "--int_method", "gradcam", "--single_sample", path])
    assert failed == []
    stem = os.path.splitext(os.path.basename(path))[0]
    assert os.path.isfile(run["root"] / "run" / "eval" / "gradcam" / "files" / f"{stem}_interpretation.wav")


def test_compare_all_is_every_method_for_cnn14():
    cnn14 = {"family": {"supports_l2i": True}}
    assert lmac_eval.methods_of({"compare": "all", "int_method": "lmac", **cnn14}) == list(lmac_eval.METHODS)
    assert lmac_eval.methods_of({"compare": "gradcam, lmac", "int_method": "lmac"}) == ["gradcam", "lmac"]
    assert lmac_eval.methods_of({"compare": None, "int_method": "l2i"}) == ["l2i"]


@pytest.mark.parametrize(
    "override, error, message",
    [
        (["--int_method", "lime"], ValueError, "int_method='lime': unknown method"),
        (["--compare", "lmac,shap"], ValueError, "compare='lmac,shap': unknown method"),
        (
            ["--compare", "l2i", "--l2i_folder", "/nowhere/l2i"],
            FileNotFoundError,
            r"l2i_folder='/nowhere/l2i' holds no L2I run .* run `python train_nmf.py hparams/l2i_cnn14.yaml`",
        ),
        (
            ["--compare", "l2i", "--width", "0.0625"],
            ValueError,
            r"has width=0.03125, but this run has width=0.0625; pass the --l2i_folder of an L2I run on the same classifier",
        ),
    ],
)
def test_bad_methods_are_refused_before_work(run, override, error, message):
    with pytest.raises(error, match=message):
        lmac_eval.main([HPARAMS, *with_flags(run["flags"], override)])


def with_flags(flags, override):
    """``flags`` with the ``--key value`` pairs of ``override`` replacing or following theirs."""
    merged = dict(zip(flags[::2], flags[1::2])) | dict(zip(override[::2], override[1::2]))
    return [item for pair in merged.items() for item in pair]


def test_the_l2i_run_loads_with_its_dictionary_and_leaves_the_random_state_alone(run):
    random.seed(5)
    torch.manual_seed(5)
    expected = random.random(), torch.rand(3)
    random.seed(5)
    torch.manual_seed(5)
    l2i = loading.load_l2i_run(str(run["root"] / "l2i"), {"width": 0.03125, "n_classes": 2})
    assert (random.random(), torch.rand(3)) == (expected[0], pytest.approx(expected[1]))
    saved = torch.load(run["root"] / "l2i" / "nmf" / "nmf_decoder.ckpt")["W"]
    assert l2i["nmf_components"] == COMPONENTS and torch.equal(l2i["nmf_decoder"].W, saved)
    assert not l2i["nmf_decoder"].W.requires_grad


def test_l2i_refuses_a_dictionary_of_another_size(run):
    with pytest.raises(ValueError, match=f"pass --nmf_components {COMPONENTS}"):
        flags = list(run["l2i_flags"])
        flags[flags.index("--nmf_components") + 1] = "5"
        train_l2i.main([L2I_HPARAMS, *flags, "--number_of_epochs", "1"])


def test_l2i_mask_keeps_the_band_of_the_component_that_drives_the_decision():
    """Two components, one per band; theta scores class 0 with the first only: the mask is that band."""
    decoder = NMFDecoderAudio(n_comp=2, n_freq=20, device="cpu")
    theta = Theta(n_comp=2, T=6, num_classes=2)
    with torch.no_grad():
        decoder.W.zero_()
        decoder.W[:10, 0] = 1.0
        decoder.W[10:, 1] = 1.0
        theta.hard_att.weight.fill_(1 / 6)  # time average
        theta.classifier[0].weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
    activations = torch.ones(1, 2, 6)
    mask = mask_methods.L2IMask(None, theta, decoder, relevance_threshold=0.5).mask_of(activations, torch.tensor([0]))
    expected = torch.zeros(1, 6, 20)
    expected[:, :, :10] = 1.0
    torch.testing.assert_close(mask, expected)
