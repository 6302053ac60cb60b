"""The trust measures (docs/method.md, Trust measures) against known answers and independent computations."""

import json
import logging
import math
import os
import types

import numpy as np
import pytest
import quantus
import scipy.stats
import torch
from speechbrain.processing.features import ISTFT, STFT

import lmac.reporting.comparison as comparison
from lmac.features import DeviceFilterbank, LogMelInput, SpectralFeatures, spectral_features
from lmac.loading import (
    SILENCE_WARNING_PROBABILITY,
    build_mask_reference,
    empty_mask_decision,
    log_empty_mask_decision,
    probe_log_magnitudes,
)
from lmac.mask_references import MASK_REFERENCE_FILE, MASK_REFERENCES, load_mask_reference, make_mask_reference
from lmac.masking import inverted_interpretation
from lmac.metrics import (
    as_mask,
    audible_localization,
    centred_ranks,
    energy_kept,
    event_box_scores,
    frequency_profile,
    input_sensitivity,
    profile_cosine,
    spearman_similarity,
)
from lmac.models.families import FAMILIES, load_family
from lmac.models.frozen_classifier import FrozenClassifier, randomised_classifier
from lmac.scoring import MEASURES, ClipScoring, clip_scores, warn_if_collapsed
from lmac.training.brain import InterpreterBrain

SAMPLE_RATE = 16000


def two_tones(low_amplitude, high_amplitude, seconds=1.0):
    """A 500 Hz and a 5 kHz tone, ``[1, samples]``."""
    t = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (low_amplitude * torch.sin(2 * torch.pi * 500 * t) + high_amplitude * torch.sin(2 * torch.pi * 5000 * t))[
        None
    ]


def test_energy_kept_is_the_share_of_the_waveforms_energy_the_interpretation_keeps():
    compute_stft, compute_istft = STFT(sample_rate=SAMPLE_RATE, n_fft=1024), ISTFT(sample_rate=SAMPLE_RATE, n_fft=1024)
    wavs = two_tones(0.5, 1.0)  # energies 1 : 4
    features = spectral_features(
        wavs, compute_stft, LogMelInput(DeviceFilterbank(n_mels=40, n_fft=1024, log_mel=False))
    )
    low_half = torch.zeros_like(features.log_mag)
    low_half[:, :, : features.log_mag.shape[2] // 4] = 1.0  # keeps 0-2 kHz: the 500 Hz tone
    interpretation = inverted_interpretation(low_half, features, wavs.shape[1], compute_istft)
    from_waveforms = interpretation.square().sum() / wavs.square().sum()  # the ear's measure, independently
    assert float(from_waveforms) == pytest.approx(0.2, abs=0.01)
    assert float(energy_kept(low_half, features.log_mag)) == pytest.approx(float(from_waveforms), abs=0.01)


def scores_of(logits, logits_empty, mask, log_mag, logits_masked_in=None):
    """The registered measures of a batch with no events and no sources (``scoring.clip_scores``)."""
    masked_in = logits if logits_masked_in is None else logits_masked_in
    output = types.SimpleNamespace(
        logits=logits,
        logits_masked_in=masked_in,
        logits_masked_out=masked_in,
        logits_empty=logits_empty,
        mask=mask,
        features=types.SimpleNamespace(log_mag=log_mag),
    )
    return clip_scores(ClipScoring(output, None, None, None))


def test_silent_share_and_the_empty_reference_measures_follow_their_definitions():
    logits = torch.tensor([[3.0, 0.0], [0.0, 3.0], [0.0, 3.0]])
    logits_empty = torch.tensor([[3.0, 0.0], [3.0, 0.0], [0.0, 3.0]])  # silence keeps the first and third decisions
    log_mag = torch.ones(3, 4, 5)
    mask = torch.stack([torch.zeros(4, 5), torch.ones(4, 5), torch.full((4, 5), 0.5)])
    masked_in = torch.tensor([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0]])  # keeps the first two decisions
    scores = scores_of(logits, logits_empty, mask, log_mag, masked_in)
    assert scores["fid_in"].tolist() == [1.0, 1.0, 0.0]
    expected_energy = [0.0, 1.0, float(np.expm1(0.5) ** 2 / np.expm1(1.0) ** 2)]
    assert scores["energy_kept"].tolist() == pytest.approx(expected_energy)
    assert scores["silent_share"].tolist() == [1.0, 0.0, 0.0]
    assert scores["empty_keeps_decision"].tolist() == [1.0, 0.0, 1.0]
    # Fid-In counts only where the empty input does not already give the decision.
    assert scores["fid_in_beyond_empty"].tolist() == [0.0, 1.0, 0.0]


def test_profile_cosine_is_one_for_a_class_agnostic_mask_and_zero_for_disjoint_bands():
    classes = torch.tensor([0, 0, 1, 1, 2])
    same_band = torch.zeros(5, 8)
    same_band[:, 2:4] = 1.0
    assert float(profile_cosine(same_band, classes, 3)) == pytest.approx(1.0)
    disjoint = torch.zeros(5, 8)
    for clip, label in enumerate(classes.tolist()):
        disjoint[clip, 2 * label : 2 * label + 2] = 1.0
    assert float(profile_cosine(disjoint, classes, 4)) == pytest.approx(0.0)  # class 3 has no clip: not counted
    # A class whose masks are all empty tells no class apart: it does not lower the measure.
    disjoint[4] = 0.0
    assert float(profile_cosine(disjoint, classes, 3)) == pytest.approx(2 / 3)
    assert math.isnan(float(profile_cosine(disjoint[:2], classes[:2], 3)))  # one class: no pair


def test_spearman_similarity_equals_scipys_with_ties_and_scores_unchanged_masks_one():
    generator = torch.Generator().manual_seed(0)
    first = torch.rand(4, 6, 5, generator=generator).round(decimals=1)  # many ties
    second = (first + 0.3 * torch.rand(4, 6, 5, generator=generator)).round(decimals=1)
    ours = spearman_similarity(first, second)
    # Ranks computed once and passed in (the cascade's way), the second masks rolled as the floor rolls them.
    ranks = centred_ranks(first)
    given = spearman_similarity(
        first, second.roll(1, dims=0), ranks=ranks, other_ranks=centred_ranks(second).roll(1, dims=0)
    )
    for row in range(4):
        rho = scipy.stats.spearmanr(first[row].flatten().numpy(), second[row].flatten().numpy()).statistic
        assert float(ours[row]) == pytest.approx(rho, abs=1e-6)
        rolled = scipy.stats.spearmanr(first[row].flatten().numpy(), second[row - 1].flatten().numpy()).statistic
        assert float(given[row]) == pytest.approx(rolled, abs=1e-6)
    assert spearman_similarity(first, first).tolist() == pytest.approx([1.0] * 4)
    ones = torch.ones(2, 3, 3)
    assert spearman_similarity(ones, ones).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="one shape"):
        spearman_similarity(first, second[:, :3])


class ToyClassifier(torch.nn.Module):
    """Two linear layers over a ``[batch, 1, 4, 4]`` input."""

    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Linear(16, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.relu(self.hidden(x.flatten(1))))


def input_gradient(model, inputs, targets, **kwargs):
    """``|d logit_y / d x|``, NumPy in and out, as quantus' ``explain_func`` takes it."""
    x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32).requires_grad_(True)
    logits = model(x)
    logits.gather(1, torch.as_tensor(np.asarray(targets)).long()[:, None]).sum().backward()
    return x.grad.abs().numpy()


def test_randomisation_similarity_agrees_with_quantus_model_parameter_randomisation():
    torch.manual_seed(3)
    model = ToyClassifier().eval()
    x = torch.randn(6, 1, 4, 4).numpy()
    y = model(torch.as_tensor(x)).argmax(dim=1).numpy()
    seed = 11
    metric = quantus.MPRT(layer_order="top_down", seed=seed, abs=False, normalise=False, disable_warnings=True)
    scores = metric(
        model=model,
        x_batch=x,
        y_batch=y,
        a_batch=input_gradient(model, x, y),
        explain_func=input_gradient,
        device="cpu",
        batch_size=6,
    )
    # quantus re-initialises the top layer first, after seeding torch with seed + 1.
    randomised = randomised_classifier(model, ["head"], seed=seed + 1)
    ours = spearman_similarity(
        torch.as_tensor(input_gradient(model, x, y)), torch.as_tensor(input_gradient(randomised, x, y))
    )
    assert ours.tolist() == pytest.approx(scores["head"], abs=1e-5)
    assert float(ours.mean()) < 0.5  # the randomised head changed the gradients


def test_the_randomisation_cascade_agrees_with_quantus_top_down_model_parameter_randomisation():
    from lmac.methods import SaliencyMask
    from lmac.training.brain import randomisation_cascade

    class Gradient(SaliencyMask):  # |d logit_c / d x| of the toy classifier, on its own input
        def __init__(self, model):
            self.model = model

        def on_classifier(self, classifier):
            return Gradient(classifier)

        def mask(self, x, logits, feature_maps=None):
            return torch.as_tensor(input_gradient(self.model, x.numpy(), logits.argmax(dim=1).numpy()))

    torch.manual_seed(3)
    model = ToyClassifier().eval()
    x = torch.randn(6, 1, 4, 4)
    logits = model(x).detach()
    seed = 11
    metric = quantus.MPRT(layer_order="top_down", seed=seed, abs=False, normalise=False, disable_warnings=True)
    y = logits.argmax(dim=1).numpy()
    scores = metric(
        model=model,
        x_batch=x.numpy(),
        y_batch=y,
        a_batch=input_gradient(model, x.numpy(), y),
        explain_func=input_gradient,
        device="cpu",
        batch_size=6,
    )
    trained = Gradient(model).mask(x, logits)
    steps = randomisation_cascade(model, Gradient(model), ["head", "hidden"], seed=seed + 1)
    assert [layer for layer, _, _ in steps] == ["head", "hidden"]
    for layer, _, method in steps:  # the head re-drawn, then the hidden layer too: quantus' cascade, step by step
        assert spearman_similarity(trained, method.mask(x, logits)).tolist() == pytest.approx(scores[layer], abs=1e-5)


def test_randomising_a_copy_leaves_the_classifier_and_the_global_random_state_alone():
    model = ToyClassifier()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    state = torch.get_rng_state()
    randomised_classifier(model, ["hidden", "head"], seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    with pytest.raises(ValueError, match="randomisation_layers='nope' is not a layer"):
        randomised_classifier(model, ["nope"], seed=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_randomisation_redraws_every_parameter_of_the_named_layers_of_each_family(name):
    torch.manual_seed(0)
    settings = {
        "sample_rate": 16000,
        "n_fft": 1024,
        "hop_length": 16,
        "win_length": 32,
        "n_mels": 80,
        "width": 1 / 16,
        "n_classes": 3,
    }
    family = load_family(name, settings)
    classifier = FrozenClassifier(family["embedding_model"], family["classifier"])
    randomised = randomised_classifier(classifier, family["randomisation_layers"], seed=1)
    for layer in family["randomisation_layers"]:
        trained = dict(classifier.get_submodule(layer).named_parameters())
        redrawn = dict(randomised.get_submodule(layer).named_parameters())
        unchanged = [key for key in trained if torch.equal(trained[key], redrawn[key])]
        assert trained and not unchanged, f"{name}: {layer} keeps {unchanged}"


def test_the_references_fill_what_they_say():
    log_mag = torch.rand(2, 50, 9) + torch.arange(2.0)[:, None, None]
    assert torch.equal(MASK_REFERENCES["zeros"]().fill(log_mag), torch.zeros_like(log_mag))
    floor = MASK_REFERENCES["noise_floor"]().fill(log_mag)
    assert torch.allclose(floor[:, 7], torch.from_numpy(np.quantile(log_mag.numpy(), 0.1, axis=1)).float(), atol=1e-6)
    assert torch.equal(floor[:, 0], floor[:, -1])  # the same in every frame
    pink = torch.expm1(MASK_REFERENCES["pink"]().fill(log_mag))
    assert torch.allclose(pink.square().sum(dim=(1, 2)), torch.expm1(log_mag).square().sum(dim=(1, 2)), rtol=1e-4)
    power = pink[0, 0, 1:].square()
    assert torch.allclose(power * torch.arange(1, 9), power[0].expand(8), rtol=1e-4)  # 1/f power
    batches = [torch.full((2, 3, 9), 1.0), torch.full((1, 3, 9), 4.0)]
    mean = make_mask_reference("mean_spectrum", batches, lambda wavs: wavs)
    assert torch.allclose(mean.fill(torch.zeros(1, 2, 9)), torch.full((1, 2, 9), 2.0))
    with pytest.raises(ValueError, match="mask_reference='quiet'; accepted values are zeros, noise_floor"):
        make_mask_reference("quiet")


@pytest.mark.parametrize("clip_statistics", [False, True])
@pytest.mark.parametrize("name", ["zeros", "mean_spectrum", "noise_floor", "pink"])
def test_the_empty_mask_is_classified_once_per_batch_only_when_its_reference_is_the_same_for_every_clip(
    name, clip_statistics
):
    log_mag = torch.rand(3, 20, 9) * torch.arange(1.0, 4.0)[:, None, None]
    reference_of = make_mask_reference(name, [torch.rand(2, 20, 9)], lambda wavs: wavs)
    reference = reference_of.fill(log_mag)
    weights = torch.randn(9, 4)
    batch_sizes = []

    def classify(mel_input):  # a per-row classifier: the mean spectrum through a linear map
        batch_sizes.append(mel_input.shape[0])
        return mel_input.mean(dim=1) @ weights, ()

    brain = type("Stub", (), {"mask_reference": reference_of, "classify": staticmethod(classify)})()
    brain.modules = types.SimpleNamespace(classifier_input=types.SimpleNamespace(uses_clip_statistics=clip_statistics))

    def input_from_log_mag(log_mag, clip_log_mag=None):  # a mean-normalised input removes the clip's mean
        return log_mag - clip_log_mag.mean(dim=1, keepdim=True) if clip_statistics else log_mag

    brain.input_from_log_mag = input_from_log_mag
    logits = InterpreterBrain.classify_empty(brain, reference, log_mag)
    assert logits.shape == (3, 4)
    expected_input = reference - clip_statistics * log_mag.mean(dim=1, keepdim=True)
    assert torch.allclose(logits, expected_input.mean(dim=1) @ weights, atol=1e-5)
    assert batch_sizes == ([1] if name in ("zeros", "mean_spectrum") and not clip_statistics else [3])


class Biased(torch.nn.Module):
    """A classifier that answers class 1 with a fixed probability, whatever the input."""

    def __init__(self, probability):
        super().__init__()
        self.logits = torch.nn.Parameter(
            torch.log(torch.tensor([(1 - probability) / 2, probability, (1 - probability) / 2]))
        )

    def forward(self, mel_input):
        return self.logits.expand(mel_input.shape[0], 3), ()


@pytest.mark.parametrize("probability, warns", [(0.9, True), (0.4, False)])
def test_every_run_says_which_class_silence_gets_and_warns_when_it_is_likely(caplog, probability, warns):
    hparams = {
        "signal_length_s": 0.5,
        "sample_rate": SAMPLE_RATE,
        "hop_length": 10,
        "n_fft": 512,
        "classifier_input": LogMelInput(DeviceFilterbank(n_mels=20, n_fft=512, log_mel=False)),
        "modules": {"classifier": Biased(probability)},
    }
    clips = torch.rand(2, 26, 257)
    with caplog.at_level(logging.INFO, logger="lmac.loading"):
        assert log_empty_mask_decision(hparams, ["kick", "snare", "hihat"], MASK_REFERENCES["zeros"](), clips) == (
            "snare",
            pytest.approx(probability),
        )
    assert (
        "gives an empty mask's input (mask_reference=zeros, built from 2 training clips as training builds it) "
        f"class 'snare' with probability {probability:.2f}" in caplog.text
    )
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert bool(warnings) == warns == (probability > SILENCE_WARNING_PROBABILITY)


class Loudness(torch.nn.Module):
    """A classifier that answers class 1 the louder its input is on average, class 0 for silence."""

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(10.0))

    def forward(self, mel_input):
        level = mel_input.mean(dim=(1, 2))
        return torch.stack([torch.zeros_like(level), self.gain * level], dim=1), ()


def test_the_start_up_probe_classifies_the_empty_mask_s_input_the_reference_not_silence():
    hparams = {
        "signal_length_s": 0.5,
        "sample_rate": SAMPLE_RATE,
        "hop_length": 10,
        "n_fft": 512,
        "classifier_input": LogMelInput(DeviceFilterbank(n_mels=20, n_fft=512, log_mel=False)),
        "modules": {"classifier": Loudness()},
    }
    loud = MASK_REFERENCES["mean_spectrum"](torch.full((257,), 2.0))
    clips = torch.rand(3, 26, 257)
    assert empty_mask_decision(hparams, MASK_REFERENCES["zeros"](), clips)[0] == 0
    decision, probability = empty_mask_decision(hparams, loud, clips)
    assert decision == 1 and probability > 0.99


def test_for_a_mean_normalised_input_the_probe_normalises_the_reference_with_each_clip_s_mean_as_training_does():
    hparams = {
        "classifier_input": LogMelInput(DeviceFilterbank(n_mels=20, n_fft=512, log_mel=False), mean_norm=True),
        "modules": {"classifier": Loudness()},
    }
    reference = MASK_REFERENCES["mean_spectrum"](torch.full((257,), 2.0))
    # Normalised with its own mean, R would be all zeros, the same input whatever the reference: a tie, class 0.
    # Training's empty input is R less the clip's mean: louder than quiet clips (class 1), quieter than loud ones.
    quiet, loud = torch.full((3, 26, 257), 0.5), torch.full((3, 26, 257), 4.0)
    assert empty_mask_decision(hparams, reference, quiet)[0] == 1
    assert empty_mask_decision(hparams, reference, loud)[0] == 0


def test_the_neutral_reference_is_one_the_classifier_gives_every_class_alike_and_the_run_keeps_it(tmp_path):
    from speechbrain.dataio.dataset import DynamicItemDataset

    clips = {f"clip{index}": {"sig": 0.5 * torch.randn(8000)} for index in range(4)}
    hparams = {
        "signal_length_s": 0.5,
        "sample_rate": SAMPLE_RATE,
        "batch_size": 2,
        "compute_stft": STFT(sample_rate=SAMPLE_RATE, n_fft=512, win_length=32, hop_length=10),
        "classifier_input": LogMelInput(DeviceFilterbank(n_mels=20, n_fft=512, log_mel=False)),
        "modules": {"classifier": Loudness()},
        "save_folder": str(tmp_path),
    }
    train_set = DynamicItemDataset(clips, output_keys=["sig"])
    probe = probe_log_magnitudes(hparams, train_set)
    hparams["mask_reference"] = "mean_spectrum"
    mean = build_mask_reference(hparams, train_set)
    assert empty_mask_decision(hparams, mean, probe) == (1, pytest.approx(1.0, abs=1e-3))  # loud: class 1
    os.remove(os.path.join(tmp_path, MASK_REFERENCE_FILE))
    hparams["mask_reference"] = "neutral_spectrum"
    neutral = build_mask_reference(hparams, train_set)
    assert empty_mask_decision(hparams, neutral, probe)[1] < 0.6  # two classes alike: 0.5 each
    shift = neutral.mean_log_spectrum - mean.mean_log_spectrum
    assert shift.abs().max() > 0.1 and torch.all(neutral.mean_log_spectrum >= 0)
    kept = load_mask_reference(os.path.join(tmp_path, MASK_REFERENCE_FILE))
    assert kept.name == "neutral_spectrum" and torch.equal(kept.mean_log_spectrum, neutral.mean_log_spectrum)


def test_a_run_keeps_its_reference_and_refuses_another(synthetic_data, tmp_path):
    from test_train_classifier import load_recipe

    from lmac.checks import SettingError, validate_data_hparams
    from lmac.data.esc50 import prepare_datasets
    from lmac.loading import build_mask_reference

    overrides = {"data_folder": synthetic_data["esc50_folder"], "output_folder": str(tmp_path), "use_pretrained": False}
    hparams = load_recipe("lmac_cnn14.yaml", overrides)
    datasets, _ = prepare_datasets(hparams)
    trained = build_mask_reference(hparams, datasets["train"])
    assert (tmp_path / "save" / "mask_reference.pt").is_file()
    # An evaluation of the run given other training clips still scores against the run's own R.
    again = build_mask_reference(hparams, datasets["test"])
    assert torch.equal(again.mean_log_spectrum, trained.mean_log_spectrum)
    other = load_recipe("lmac_cnn14.yaml", {**overrides, "mask_reference": "zeros"})
    with pytest.raises(
        SettingError,
        match=r"mask_reference='zeros', but the run in .* was trained with 'mean_spectrum'.*pass --mask_reference mean_spectrum",
    ):
        validate_data_hparams(other)


def test_a_collapsed_validation_stage_is_reported(caplog):
    stats = {"silent_share": 0.75, "energy_kept": 0.004, "fid_in": 0.2, "fid_in_beyond_empty": 0.0}
    with caplog.at_level(logging.WARNING, logger="lmac.training.brain"):
        assert warn_if_collapsed(stats, epoch=3)
        assert not warn_if_collapsed({**stats, "silent_share": 0.25}, epoch=4)
    assert "Epoch 3: the masks have collapsed: 75% of the validation interpretations" in caplog.text
    assert "Epoch 4" not in caplog.text


def test_the_report_shows_energy_kept_and_says_when_an_interpretation_is_not_trustworthy(tmp_path):
    records = {
        "silent": {
            "label": 0,
            "prediction": 0,
            "probability": 0.9,
            "energy_kept": 0.004,
            "empty_decision": 0,
            "empty_probability": 0.79,
        },
        "heard": {
            "label": 1,
            "prediction": 1,
            "probability": 0.8,
            "energy_kept": 0.35,
            "empty_decision": 0,
            "empty_probability": 0.79,
        },
    }
    for clip, record in records.items():
        folder = tmp_path / "test" / clip
        folder.mkdir(parents=True)
        (folder / "clip.json").write_text(json.dumps(record), encoding="utf-8")
        for name in ("original.wav", "interpretation.wav", "spectrogram.png"):
            (folder / name).write_bytes(b"")
    stats = {"silent_share": 0.5, "fid_in": 0.5}
    page = open(
        comparison.report_test_interpretations(str(tmp_path), stats, "t", ["kick", "snare"]), encoding="utf-8"
    ).read()
    assert (
        '<div class="warning"><strong>Not trustworthy:</strong><ul><li>50% of the interpretations are near-silent'
        in page
    )
    silent_row, heard_row = page.split("<tr><td>silent</td>")[1], page.split("<tr><td>heard</td>")[1]
    assert "<td>0.4%</td>" in silent_row.split("<img")[0] and "<td>35.0%</td>" in heard_row.split("<img")[0]
    assert "Near-silent: the interpretation keeps 0.4% of the input&#x27;s energy." in silent_row.split("<img")[0]
    assert "This classifier gives kick to an empty mask (silence or the reference) with probability 0.79" in silent_row
    assert "Not trustworthy" not in heard_row.split("<img")[0]


def test_a_mean_normalised_input_reads_the_reference_and_a_level_change_through_the_clip_s_statistics():
    """ECAPA and conv2d remove each clip's mean per band: a constant-over-time R or a mask uniform over time would
    vanish in the masked input's own mean; normalised with the unmasked clip's mean, they do not."""
    to_input = LogMelInput(DeviceFilterbank(n_mels=8, n_fft=64, log_mel=False), mean_norm=True)
    log_mag = torch.rand(2, 30, 33, generator=torch.Generator().manual_seed(6)) + 1.0
    weights = torch.randn(8, 3, generator=torch.Generator().manual_seed(7))

    class Stub:
        masked_output = InterpreterBrain.masked_output
        classify_empty = InterpreterBrain.classify_empty
        input_from_log_mag = InterpreterBrain.input_from_log_mag
        classify = InterpreterBrain.classify
        modules = types.SimpleNamespace(classifier_input=to_input, classifier=lambda x: (x.mean(dim=1) @ weights, ()))

        def needs_empty_logits(self, stage):
            return True

    features = SpectralFeatures(torch.zeros(2, 30, 33, 2), log_mag, to_input(log_mag))
    empties = []
    for reference in (MASK_REFERENCES["zeros"](), MASK_REFERENCES["mean_spectrum"](torch.full((33,), 2.0))):
        brain = Stub()
        brain.mask_reference = reference
        output = brain.masked_output(None, features, None, torch.zeros(2, 30, 33), None)
        empties.append(output.logits_empty)
        torch.testing.assert_close(output.logits_empty, output.logits_masked_in)  # the empty mask keeps R only
    assert not torch.allclose(*empties)  # R changes what the classifier hears
    half = Stub()
    half.mask_reference = MASK_REFERENCES["zeros"]()
    output = half.masked_output(None, features, None, torch.full((2, 30, 33), 0.5), None)
    # This classifier reads only the input's level against the clip's mean: normalised with its own mean, every
    # masked input would give it 0, as the whole clip does; with the clip's mean it hears the halved level.
    whole = features.classifier_input.mean(dim=1) @ weights
    assert torch.allclose(whole, torch.zeros_like(whole), atol=1e-5)
    assert not torch.allclose(output.logits_masked_in, whole, atol=1e-3)


def test_a_class_whose_masks_go_silent_and_lose_the_decision_is_named_in_validation(caplog):
    from lmac.scoring import class_collapse_stats, warn_of_collapsed_classes

    per_class = {
        0: {"fid_in": 1.0, "silent_share": 0.0},
        1: {"fid_in": 0.125, "silent_share": 0.875},  # noise_burst_mid on another machine
        2: {"fid_in": 0.9, "silent_share": 0.6},  # near-silent but keeps its decision: not a collapse
        3: {"fid_in": 1.0, "silent_share": 0.875, "empty_keeps_decision": 1.0},  # kept by the reference alone
    }
    assert class_collapse_stats(per_class) == {"worst_class_fid_in": 0.125, "collapsed_classes": 1}
    with caplog.at_level(logging.WARNING, logger="lmac.training.brain"):
        assert warn_of_collapsed_classes(per_class, 3, ["kick", "noise_burst_mid", "hihat", "silent_tick"]) == [1, 3]
    assert "Epoch 3: the interpretations of 1 class(es) have collapsed" in caplog.text
    assert "noise_burst_mid (Fid-In 0.12, 88% near-silent)" in caplog.text and "hihat" not in caplog.text
    assert (
        "are near-silent and keep the decision only because the reference alone does: silent_tick (Fid-In 1.00, "
        "88% near-silent; the reference alone keeps 100% of its decisions)" in caplog.text
    )


def test_an_event_box_that_holds_under_one_percent_of_the_energy_is_near_silent():
    # Magnitudes (expm1 of log_mag): one loud cell of 100 and 99 cells of 1 per clip, energy 10000 + 99.
    magnitudes = torch.ones(3, 10, 10)
    magnitudes[:, 0, 0] = 100.0
    boxes = torch.zeros(3, 10, 10, dtype=torch.bool)
    boxes[0, 0, 0] = True  # the loud cell: 10000 / 10099 of the energy
    boxes[1, 5, :9] = True  # 9 quiet cells: 0.09%
    boxes[2, 5:, :] = True  # 50 quiet cells: 0.5%
    scores = event_box_scores(boxes, torch.log1p(magnitudes))
    torch.testing.assert_close(scores["event_energy_kept"], torch.tensor([10000.0, 9.0, 50.0]) / 10099.0)
    assert scores["event_silent_share"].tolist() == [0.0, 1.0, 1.0]
    boxes[2, 0, 0] = True  # the loud cell as well: 10050 / 10099
    assert event_box_scores(boxes, torch.log1p(magnitudes))["event_silent_share"].tolist() == [0.0, 1.0, 0.0]


def test_event_fid_in_is_what_a_mask_exactly_on_the_event_keeps_with_the_removed_cells_filled_by_the_reference():
    # A classifier that answers the louder of two bands (bins 0-1: class 0, bins 3-4: class 1), on its log-magnitude.
    def classify(log_mag):
        return torch.stack([log_mag[..., :2].sum(dim=(1, 2)), log_mag[..., 3:].sum(dim=(1, 2))], dim=1), ()

    log_mag = torch.zeros(3, 4, 5)
    log_mag[:, :, :2] = 2.0  # every clip is loud in the low band: decision 0
    log_mag[:, :, 3:] = 1.0
    boxes = torch.zeros(3, 4, 5, dtype=torch.bool)
    boxes[0, :2, :2] = True  # on the low band: keeps it
    boxes[1, :, 3:] = True  # on the other band: the decision becomes 1
    boxes[2, :2, :2] = True  # on the low band, but the reference is loud in the high band
    reference = torch.zeros(3, 4, 5)
    reference[2, :, 3:] = 5.0
    output = types.SimpleNamespace(
        features=types.SimpleNamespace(log_mag=log_mag),
        logits=classify(log_mag)[0],
        mask=torch.rand(3, 4, 5),
        reference=reference,
    )
    clip = ClipScoring(output, lambda cells: classify(cells)[0], None, None, boxes=boxes)
    assert MEASURES["event_fid_in"].score(clip).tolist() == [1.0, 0.0, 0.0]


def test_a_near_silent_interpretation_localises_at_chance_whatever_its_faint_cells_hold():
    box = torch.zeros(2, 6, 8, dtype=torch.bool)
    box[:, 1:3, 2:5] = True
    on_the_box = box.float()
    masks = torch.stack([on_the_box[0], 1e-4 * on_the_box[1]])
    log_mag = torch.ones(2, 6, 8)
    silent = scores_of(torch.zeros(2, 2), torch.zeros(2, 2), masks, log_mag)["silent_share"]
    assert silent.tolist() == [0.0, 1.0]
    localisation = audible_localization(masks, box, silent)
    assert localisation.tolist() == pytest.approx([48 / 6, 1.0])  # the box holds 6 of the 48 cells


def test_the_classifier_s_sensitivity_is_the_finite_difference_of_its_decision_s_log_probability_in_each_cell():
    # A small non-linear classifier; central differences of log q_c cell by cell of L, against the autograd
    # sensitivity. Nothing weighs a cell by its loudness: a cell the classifier reads the same way counts the same.
    generator = torch.Generator().manual_seed(3)
    weights, bias = (
        torch.randn(12, 3, generator=generator, dtype=torch.float64),
        torch.randn(3, generator=generator, dtype=torch.float64),
    )

    def logits_of(log_mag):
        return torch.tanh(log_mag.flatten(1)) @ weights + bias

    log_mag = torch.rand(2, 3, 4, generator=generator, dtype=torch.float64) * 3
    decision = logits_of(log_mag).argmax(dim=1)
    sensitivity = input_sensitivity(log_mag, logits_of, decision)

    def log_q(cells):
        return torch.log_softmax(logits_of(cells), dim=1).gather(1, decision[:, None]).squeeze(1)

    step = 1e-6
    expected = torch.zeros_like(log_mag)
    for cell in np.ndindex(*log_mag.shape[1:]):
        bump = torch.zeros_like(log_mag)
        bump[(slice(None), *cell)] = step
        expected[(slice(None), *cell)] = ((log_q(log_mag + bump) - log_q(log_mag - bump)) / (2 * step)).abs()
    assert torch.allclose(sensitivity.double(), expected, atol=1e-5)


def test_the_sensitivity_profiles_are_those_of_masks_and_a_class_with_no_gradient_is_left_out():
    # Class 0: two clips sensitive in bin 0 and in bin 1, one 100x more; class 1: bin 1; class 2: no gradient at all
    # (a saturated softmax). As masks (peak 1 per clip), every clip counts the same in its class's mean.
    weights = torch.zeros(4, 2, 2)
    weights[0, :, 0], weights[1, :, 1], weights[2, :, 1] = 100.0, 1.0, 1.0
    profiles = frequency_profile(as_mask(weights))
    assert profiles.tolist() == [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 0.0]]
    # class 0's mean profile is (0.5, 0.5): cosine 1/sqrt(2) with class 1's (0, 1); class 2 says nothing of its bands
    classes = torch.tensor([0, 0, 1, 2])
    assert float(profile_cosine(profiles, classes, 3, empty_is_alike=False)) == pytest.approx(2**-0.5)
    assert float(profile_cosine(profiles, classes, 3)) == pytest.approx((2**-0.5 + 2) / 3)  # as masks: silent = alike


def test_a_comparison_says_when_the_classifier_s_own_sensitivity_is_class_agnostic_too():
    table = {"lmac": {"profile_cosine": 0.99, "sensitivity_profile_cosine": 0.97}}
    assert (
        "The classifier's own sensitivity has one too (sensitivity_profile_cosine 0.97)"
        in comparison.comparison_markdown(table)
    )
    table["lmac"]["sensitivity_profile_cosine"] = 0.5
    assert "classifier's own sensitivity" not in comparison.comparison_markdown(table)
