"""The listening measures (``lmac.listening``): known answers, and the parts they rest on."""

import math
import types

import numpy as np
import pytest
import soundfile as sf
import torch

from lmac.data.contamination import ClipOverlap
from lmac.data.wham import MixedBatch, combine_batches, mix_with_gains
from lmac.features import DeviceISTFT, DeviceSTFT, LogMagnitudeInput, spectral_features
from lmac.listening import (
    SourceParts,
    clean_clip_parts,
    effective_gain,
    interpretation_parts,
    listening_scores,
    other_class_parts,
    si_sdr_db,
    source_parts,
)
from lmac.masking import inverted_interpretation
from lmac.metrics import energy_kept, near_silent
from lmac.scoring import MEASURES, ClipScoring

RATE = 16000
STFT_SETTINGS = {"sample_rate": RATE, "n_fft": 1024, "hop_length": 11.6099, "win_length": 23.2199}  # the recipe's


@pytest.fixture(scope="module")
def transforms():
    return DeviceSTFT(**STFT_SETTINGS), DeviceISTFT(**STFT_SETTINGS)


def tone(frequency, seconds=1.0, amplitude=0.5):
    time = torch.arange(int(seconds * RATE)) / RATE
    return amplitude * torch.sin(2 * math.pi * frequency * time)


def two_tones():
    """A target tone at 1 kHz and a rest tone at 4 kHz of the same energy, in a batch of one."""
    return tone(1000.0).unsqueeze(0), tone(4000.0).unsqueeze(0)


def features_of(wavs, compute_stft):
    return spectral_features(wavs, compute_stft, LogMagnitudeInput())


def scores_of(mask, parts, compute_stft, compute_istft):
    features = features_of(parts.target + parts.rest, compute_stft)
    return listening_scores(mask, features.log_mag, parts, compute_stft, compute_istft)


def mask_for_gain(gain, log_mag):
    """The mask ``M`` whose effective gain ``expm1(M L) / expm1(L)`` is ``gain`` on every cell: ``log1p(g |X|) / L``."""
    return torch.where(log_mag > 0, torch.log1p(gain * torch.expm1(log_mag)) / log_mag.clamp_min(1e-12), gain)


def test_the_parts_add_up_to_the_interpretation_sample_by_sample(transforms):
    compute_stft, compute_istft = transforms
    generator = torch.Generator().manual_seed(0)
    target, rest = torch.randn(2, RATE // 2, generator=generator) * 0.2, torch.randn(2, RATE // 2, generator=generator)
    features = features_of(target + rest, compute_stft)
    mask = torch.rand(
        features.log_mag.shape[0], features.log_mag.shape[1] - 3, features.log_mag.shape[2], generator=generator
    )
    played_target, played_rest = interpretation_parts(
        effective_gain(mask, features.log_mag),
        SourceParts(target, rest, torch.ones(2, dtype=torch.bool)),
        compute_stft,
        compute_istft,
    )
    interpretation = inverted_interpretation(mask, features, target.shape[1], compute_istft)
    torch.testing.assert_close(played_target + played_rest, interpretation, atol=2e-5, rtol=1e-4)
    assert played_target.abs().max() > 0.05 and played_rest.abs().max() > 0.05  # both parts are heard


def test_the_all_ones_mask_gains_nothing_and_keeps_the_whole_target(transforms):
    compute_stft, compute_istft = transforms
    target, rest = two_tones()
    parts = SourceParts(target, rest + 0.3 * tone(1000.0).unsqueeze(0), torch.ones(1, dtype=torch.bool))
    features = features_of(parts.target + parts.rest, compute_stft)
    scores = scores_of(torch.ones_like(features.log_mag), parts, compute_stft, compute_istft)
    assert scores["sir_gain_db"].item() == pytest.approx(0.0, abs=1e-3)
    assert scores["sir_gain_6db_share"].item() == 0.0
    # Resynthesis with G = 1 returns the target but for the clip's edges.
    assert scores["target_kept"].item() == pytest.approx(1.0, abs=2e-3)
    assert scores["rest_kept"].item() == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("rest_gain", [0.1, 0.5])
def test_a_mask_on_the_target_cells_gains_what_it_takes_off_the_rest(transforms, rest_gain):
    compute_stft, compute_istft = transforms
    target, rest = two_tones()
    parts = SourceParts(target, rest, torch.ones(1, dtype=torch.bool))
    features = features_of(target + rest, compute_stft)
    target_cells = compute_stft(target).square().sum(-1) > compute_stft(rest).square().sum(-1)
    gain = torch.where(target_cells, 1.0, rest_gain)  # keeps the 1 kHz tone, scales the 4 kHz one by rest_gain
    scores = scores_of(mask_for_gain(gain, features.log_mag), parts, compute_stft, compute_istft)
    expected_db = -20 * math.log10(rest_gain)  # the rest's amplitude scaled by rest_gain, the target's kept
    assert scores["sir_gain_db"].item() == pytest.approx(expected_db, abs=0.1)
    assert scores["target_kept"].item() == pytest.approx(1.0, abs=0.01)
    assert scores["rest_kept"].item() == pytest.approx(rest_gain**2, rel=0.02)
    # The interpretation is target + rest_gain * rest, and the tones have the same energy.
    assert scores["si_sdr_db"].item() == pytest.approx(expected_db, abs=0.1)
    assert scores["sir_gain_6db_share"].item() == float(expected_db >= 6)
    # Two tones far apart: the ideal binary mask removes the rest almost entirely.
    assert scores["ideal_mask_sir_gain_db"].item() > 40
    without_ideal = listening_scores(
        mask_for_gain(gain, features.log_mag), features.log_mag, parts, compute_stft, compute_istft, with_ideal=False
    )
    assert "ideal_mask_sir_gain_db" not in without_ideal
    assert without_ideal["sir_gain_db"].item() == pytest.approx(expected_db, abs=0.1)


def test_a_silent_interpretation_is_unheard_has_no_ratio_and_does_not_reach_6_db(transforms):
    compute_stft, compute_istft = transforms
    target, rest = two_tones()
    parts = SourceParts(target, rest, torch.ones(1, dtype=torch.bool))
    features = features_of(target + rest, compute_stft)
    scores = scores_of(torch.zeros_like(features.log_mag), parts, compute_stft, compute_istft)
    assert math.isnan(scores["sir_gain_db"].item()) and math.isnan(scores["target_kept"].item())
    assert scores["sir_gain_6db_share"].item() == 0.0 and scores["unheard_share"].item() == 1.0
    assert scores["ideal_mask_sir_gain_db"].item() > 40  # a property of the clip, not of the mask


def test_a_quiet_target_played_alone_is_heard_though_it_is_a_near_silent_share_of_a_loud_input(transforms):
    compute_stft, compute_istft = transforms
    target, rest = 0.04 * tone(1000.0).unsqueeze(0), tone(4000.0).unsqueeze(0)  # the target 28 dB under the rest
    parts = SourceParts(target, rest, torch.ones(1, dtype=torch.bool))
    features = features_of(target + rest, compute_stft)
    target_cells = compute_stft(target).square().sum(-1) > compute_stft(rest).square().sum(-1)
    mask = mask_for_gain(target_cells.float(), features.log_mag)  # plays the target, nothing of the rest
    assert near_silent(energy_kept(mask, features.log_mag)).item() == 1.0  # the input-relative trust measure
    scores = scores_of(mask, parts, compute_stft, compute_istft)
    assert scores["unheard_share"].item() == 0.0
    assert scores["target_kept"].item() == pytest.approx(1.0, abs=0.02) and scores["sir_gain_6db_share"].item() == 1
    quieter = scores_of(
        mask_for_gain(0.05 * target_cells.float(), features.log_mag), parts, compute_stft, compute_istft
    )
    assert quieter["unheard_share"].item() == 1.0  # 26 dB under the target: unheard
    assert math.isnan(quieter["sir_gain_db"].item()) and quieter["sir_gain_6db_share"].item() == 0.0


def test_si_sdr_against_a_direct_computation():
    generator = torch.Generator().manual_seed(3)
    target, estimate = torch.randn(3, 500, generator=generator), torch.randn(3, 500, generator=generator)
    estimate = estimate + 2 * target
    for row in range(3):
        t, e = target[row].double().numpy(), estimate[row].double().numpy()
        projection = (e @ t) / (t @ t) * t
        expected = 10 * np.log10(np.sum(projection**2) / np.sum((e - projection) ** 2))
        assert si_sdr_db(estimate, target)[row].item() == pytest.approx(expected, abs=1e-3)


def test_mix_with_gains_gives_the_gains_of_combine_batches_mixture():
    generator = torch.Generator().manual_seed(1)
    clean, noise = torch.randn(3, 400, generator=generator), 3 * torch.randn(3, 400, generator=generator)
    mixture, clean_gain, noise_gain = mix_with_gains(clean, noise, 0.8, 0.2)
    torch.testing.assert_close(mixture, combine_batches(clean, noise, 0.8, 0.2))
    torch.testing.assert_close(
        clean_gain.unsqueeze(1) * clean + noise_gain.unsqueeze(1) * noise, mixture, atol=1e-6, rtol=0
    )
    # 0.8 s/||s|| + 0.2 u/||u||: the two parts' RMS are 4 to 1 before the peak normalisation.
    ratio = (clean_gain * clean.square().mean(1).sqrt()) / (noise_gain * noise.square().mean(1).sqrt())
    torch.testing.assert_close(ratio, torch.full((3,), 4.0))


def two_class_mixture():
    """Four class-0 clips (their event in samples 0-1) mixed with clips of classes 1, 1, 2 and 0 (their event in
    samples 4-5), decided as the clip's own class, the added clip's, neither, and the own class that both share."""
    clean = torch.ones(4, 6)
    event = torch.zeros(4, 6)
    event[:, :2] = 1.0
    mixed = MixedBatch.of_mixture(
        clean,
        torch.tensor([[1.0, -1.0, 1.0, -1.0, 2.0, 2.0]]).expand(4, 6),
        noise_event=torch.tensor([[0, 0, 0, 0, 1.0, 1.0]]).expand(4, 6),
        noise_labels=torch.tensor([1, 1, 2, 0]),
    )
    return mixed, event, torch.tensor([0, 0, 0, 0]), torch.tensor([0, 1, 3, 0])


def test_source_parts_of_a_two_class_mixture_follow_the_decision():
    mixed, event, labels, decisions = two_class_mixture()
    parts = source_parts(mixed, event, labels, decisions)
    assert parts.scored.tolist() == [True, True, False, False]
    torch.testing.assert_close(parts.target + parts.rest, mixed.wavs)
    assert parts.target[0].nonzero().flatten().tolist() == [0, 1]  # the clip's own event
    assert parts.target[1].nonzero().flatten().tolist() == [4, 5]  # the added clip's event
    torch.testing.assert_close(parts.target[1], mixed.added_event[1])  # as it is in the mixture
    assert (mixed.added_event[:, 4:] > 0).all() and (mixed.clean_gain > 0).all()


def test_the_other_class_parts_target_the_sound_of_the_class_not_decided():
    mixed, event, labels, decisions = two_class_mixture()
    parts, classes = other_class_parts(mixed, event, labels, decisions)
    assert parts.scored.tolist() == [True, True, False, False]  # the clips source_parts scores
    assert classes[:2].tolist() == [1, 0]  # decided own: the added clip's class; decided the added one: the clip's own
    torch.testing.assert_close(parts.target + parts.rest, mixed.wavs)
    assert parts.target[0].nonzero().flatten().tolist() == [4, 5]  # the added clip's event
    torch.testing.assert_close(parts.target[0], mixed.added_event[0])
    assert parts.target[1].nonzero().flatten().tolist() == [0, 1]  # the clip's own event, as it is in the mixture
    torch.testing.assert_close(parts.target[1], mixed.clean_gain[1] * event[1])
    assert other_class_parts(MixedBatch.of_clean(mixed.clean), event, labels, decisions) == (None, None)


def test_source_parts_of_a_clean_clip_need_its_event():
    clean = torch.randn(2, 8)
    mixed = MixedBatch.of_clean(clean)
    labels = torch.tensor([0, 1])
    assert source_parts(mixed, None, labels, labels) is None
    event = 0.5 * clean
    parts = source_parts(mixed, event, labels, torch.tensor([1, 1]))
    torch.testing.assert_close(parts.target, event)
    torch.testing.assert_close(parts.rest, clean - event)
    assert parts.scored.tolist() == [False, True]  # the clip's event did not make a wrong decision
    assert source_parts(mixed, event, None, torch.tensor([1, 1])).scored.tolist() == [True, True]  # classes unknown


def test_a_wrong_decision_under_noise_is_not_scored_and_the_scored_share_says_so(transforms):
    target, rest = two_tones()
    clean = torch.cat([target] * 3)
    mixed = MixedBatch.of_mixture(clean, torch.cat([rest] * 3))
    parts = source_parts(mixed, None, torch.tensor([0, 1, 2]), torch.tensor([0, 2, 2]))
    torch.testing.assert_close(parts.target, mixed.clean_gain.unsqueeze(1) * clean)
    assert parts.scored.tolist() == [True, False, True]
    features = features_of(mixed.wavs, transforms[0])
    scores = scores_of(torch.ones_like(features.log_mag), parts, *transforms)
    assert scores["scored_share"].tolist() == [1.0, 0.0, 1.0]
    assert scores["sir_gain_db"][1].isnan() and scores["unheard_share"][1].isnan()
    assert scores["sir_gain_db"][0].abs().item() < 1e-3  # the all-ones mask gains nothing on the scored clips


def test_the_clean_clip_gain_keeps_the_clips_own_background_as_its_target(transforms):
    # The clip: an event at 1 kHz over its own background at 2 kHz; noise at 4 kHz mixed in. A mask on every cell
    # under 3 kHz keeps the clean clip and removes the noise.
    event, background = tone(1000.0).unsqueeze(0), tone(2000.0).unsqueeze(0)
    noise = tone(4000.0).unsqueeze(0)
    mixed = MixedBatch.of_mixture(event + background, noise)
    parts = clean_clip_parts(mixed, torch.tensor([3]), torch.tensor([3]))
    torch.testing.assert_close(parts.target + parts.rest, mixed.wavs)
    torch.testing.assert_close(parts.rest, mixed.added)
    assert parts.scored.tolist() == [True]
    log_mag = features_of(mixed.wavs, transforms[0]).log_mag
    below_3khz = torch.zeros_like(log_mag)
    below_3khz[..., : int(3000 / (RATE / 1024))] = 1.0
    measure = MEASURES["clean_sir_gain_db"]

    def clean_gain(mask):
        output = types.SimpleNamespace(mask=mask, features=types.SimpleNamespace(log_mag=log_mag))
        return measure.score(ClipScoring(output, None, *transforms, clean_parts=parts)).item()

    assert clean_gain(below_3khz) > 30  # the noise, half the input's energy, is gone; the clean clip is all kept
    assert abs(clean_gain(torch.ones_like(log_mag))) < 1e-3
    # The decided sound's gain counts the clip's own background as the rest: mixed at 0 dB, event, background and
    # noise hold 1 : 1 : 2 of the energy, so the same mask takes the event from 1 : 3 of the rest to 1 : 1, 4.8 dB.
    decided = scores_of(below_3khz, source_parts(mixed, event, torch.tensor([3]), torch.tensor([3])), *transforms)
    assert decided["sir_gain_db"].item() == pytest.approx(10 * math.log10(3), abs=0.2)
    assert clean_clip_parts(MixedBatch.of_clean(mixed.clean), None, torch.tensor([3])) is None
    two_classes, _, labels, decisions = two_class_mixture()
    assert clean_clip_parts(two_classes, labels, decisions) is None  # source_parts scores those


def test_class_mixtures_draw_another_class_and_keep_its_event(tmp_path):
    paths, events = [], []
    for index, frequency in enumerate((300.0, 600.0, 900.0)):
        clip = tone(frequency, 0.25).numpy()
        event = clip.copy()
        event[: len(event) // 2] = 0.0
        paths.append(str(tmp_path / f"clip{index}.wav"))
        events.append(str(tmp_path / f"clip{index}_event.wav"))
        sf.write(paths[-1], clip, RATE, subtype="FLOAT")
        sf.write(events[-1], event, RATE, subtype="FLOAT")
    overlap = ClipOverlap(paths, RATE, seed=0, weights=(1.0, 1.0), labels=[0, 1, 2], event_paths=events)
    clean = torch.stack([tone(5000.0, 0.25)] * 6)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    mixed = overlap.mix(clean, labels)
    assert (mixed.added_labels != labels).all()
    added_event_share = mixed.added_event.square().sum(1) / mixed.added.square().sum(1)
    torch.testing.assert_close(added_event_share, torch.full((6,), 0.5), atol=0.01, rtol=0)  # half of each clip
    torch.testing.assert_close(mixed.clean_gain.unsqueeze(1) * clean + mixed.added, mixed.wavs)


def test_the_comparison_says_when_a_method_plays_the_rest_as_loud_as_the_decided_sound():
    from lmac.reporting.comparison import comparison_warnings

    table = {
        "lmac": {"sir_gain_db": 0.4, "sir_gain_6db_share": 0.05, "ideal_mask_sir_gain_db": 25.0},
        "gradcam": {"sir_gain_db": 7.0, "sir_gain_6db_share": 0.6, "ideal_mask_sir_gain_db": 25.0},
        "all_ones_mask": {"sir_gain_db": 0.0, "sir_gain_6db_share": 0.0, "ideal_mask_sir_gain_db": 25.0},
    }
    warnings = comparison_warnings(table)
    assert warnings == [
        "lmac: its interpretations play the rest about as loud as the sound that made the decision (median SIR gain "
        "+0.4 dB, 5% of the clips at 6 dB or more, where the ideal binary mask gains +25.0 dB): listening to them "
        "does not pick out that sound."
    ]


def test_a_stage_or_class_mostly_unheard_has_no_median_of_its_few_heard_clips():
    from lmac.training.brain import InterpreterBrain

    def stage_statistics(unheard):
        """Four scored clips of class 0, ``unheard`` of them unheard (the others gain 20 dB), two heard of class 1."""
        gains = [math.nan] * unheard + [20.0] * (4 - unheard) + [5.0, 7.0]
        scores = {"sir_gain_db": torch.tensor(gains), "unheard_share": torch.tensor(gains).isnan().float()}
        brain = types.SimpleNamespace(
            stage_scores={name: [values] for name, values in scores.items()},
            stage_classes=dict.fromkeys(scores, [torch.tensor([0, 0, 0, 0, 1, 1])]),
            stage_profiles={"mask": [], "event": [], "sensitivity": [], "classes": []},
            stage_values={},
            hparams=types.SimpleNamespace(data_classes=2),
        )
        return InterpreterBrain.stage_statistics(brain, 0.0), brain.per_class_stats

    stats, per_class = stage_statistics(unheard=3)  # half the stage, three quarters of class 0
    assert stats["sir_gain_db"] == 7.0 and "sir_gain_db" not in per_class[0]
    assert per_class[0]["unheard_share"] == 0.75 and per_class[1]["sir_gain_db"] == 5.0
    stats, _ = stage_statistics(unheard=4)  # two thirds of the stage: its 5 and 7 dB describe a third of it
    assert "sir_gain_db" not in stats and stats["unheard_share"] == pytest.approx(2 / 3)


def test_the_comparison_says_how_quietly_a_near_silent_method_plays_the_decided_sound_where_it_is_heard():
    from lmac.reporting.comparison import comparison_warnings

    table = {
        "integrated_gradients": {"silent_share": 1.0, "target_kept": 0.04, "sir_gain_db": 27.0, "unheard_share": 0.0},
        "saliency": {"silent_share": 1.0, "unheard_share": 0.9},  # mostly unheard: no median of the heard clips
    }
    heard, unheard = comparison_warnings(table)
    assert heard.endswith(
        "Turned up, most play the decided sound (4% of its energy, -14 dB, median SIR gain +27.0 dB): "
        "read its listening measures at that level."
    )
    assert unheard.startswith("saliency: 100% of its interpretations are near-silent") and "Turned up" not in unheard
