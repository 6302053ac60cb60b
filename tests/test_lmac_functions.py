"""L-MAC losses and metrics against direct computations on small tensors."""

import collections
import math
import types
import warnings

import numpy as np
import pytest
import speechbrain as sb
import torch
import torch.nn.functional as F

from lmac.data.wham import MixedBatch
from lmac.features import SpectralFeatures
from lmac.metrics import (
    clean_energy_share,
    complexity,
    fidelity_scores,
    sparseness,
)
from lmac.scoring import ClipScoring, clip_scores
from lmac.training.brain import InterpreterBrain, MaskedOutput
from lmac.training.lmac import LMAC, AdaptiveWeight, crosscor, guidance_per_example, masked_out_loss, tv_loss


def random_spectrograms(batch=3, frames=7, freq=5, seed=0):
    return torch.rand(batch, frames, freq, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["conv", "dotp"])
def test_crosscor_of_a_spectrogram_with_itself_is_one_at_any_scale(kind):
    x = random_spectrograms()
    assert torch.allclose(crosscor(x, x, kind), torch.ones(3), atol=1e-5)
    assert torch.allclose(crosscor(x, 7.5 * x, kind), torch.ones(3), atol=1e-5)
    y = random_spectrograms(seed=1)
    assert torch.allclose(crosscor(0.1 * x, 20 * y, kind), crosscor(x, y, kind), atol=1e-5)


def test_crosscor_matches_pearson_and_cosine_similarity():
    x, y = random_spectrograms(seed=2), random_spectrograms(seed=3)
    pearson = [np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1] for a, b in zip(x, y)]
    cosine = torch.nn.functional.cosine_similarity(x.flatten(1), y.flatten(1), dim=1)
    assert np.allclose(crosscor(x, y, "conv").numpy(), pearson, atol=1e-5)
    assert torch.allclose(crosscor(x, y, "dotp"), cosine, atol=1e-5)


def test_crosscor_rejects_unknown_kinds_and_mismatched_shapes():
    x = random_spectrograms()
    with pytest.raises(ValueError, match=r"crosscortype='pearson'; accepted values are \('conv', 'dotp'\)"):
        crosscor(x, x, "pearson")
    with pytest.raises(ValueError, match=r"got \(3, 7, 5\) and \(3, 6, 5\)"):
        crosscor(x, x[:, :6], "dotp")


def test_tv_of_a_constant_mask_is_zero_and_matches_a_loop():
    assert torch.equal(tv_loss(torch.full((2, 6, 4), 0.3)), torch.zeros(2))
    mask = random_spectrograms(batch=2, frames=4, freq=3)
    for b in range(2):
        total = 0.0
        for t in range(4):
            for f in range(3):
                if t + 1 < 4:
                    total += (mask[b, t + 1, f] - mask[b, t, f]).item() ** 2
                if f + 1 < 3:
                    total += (mask[b, t, f + 1] - mask[b, t, f]).item() ** 2
        assert tv_loss(mask)[b].item() == pytest.approx(total / 2, rel=1e-5)


def test_guidance_terms_match_their_definitions():
    mask = random_spectrograms(seed=4).clamp(0.01, 0.99)
    log_mag, clean = random_spectrograms(seed=5), random_spectrograms(seed=6)
    masked_in = mask * log_mag
    binary = guidance_per_example(mask, masked_in, clean, "binary", 0.35)
    for b in range(3):
        oracle = (clean[b] >= 0.35 * clean[b].max()).float()
        bce = -(oracle * torch.log(mask[b]) + (1 - oracle) * torch.log(1 - mask[b])).mean()
        assert binary[b].item() == pytest.approx(bce.item(), rel=1e-5)
    reconstruction = guidance_per_example(mask, masked_in, clean, "reconstruction", 0.35)
    assert torch.allclose(reconstruction, ((masked_in - clean) ** 2).mean(dim=(1, 2)))


def logits_of(probabilities):
    return torch.log(torch.tensor(probabilities, dtype=torch.float32))


def test_fidelity_metrics_on_hand_made_probabilities():
    p = logits_of([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1], [0.5, 0.25, 0.25]])
    q_in = logits_of([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.5, 0.25, 0.25]])
    q_out = logits_of([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.45, 0.45]])
    scores = {name: values.tolist() for name, values in fidelity_scores(p, q_in, q_out).items()}
    assert scores["fid_in"] == [1.0, 0.0, 1.0]
    assert scores["FF"] == pytest.approx([0.4, 0.0, 0.4], abs=1e-6)
    assert scores["AI"] == [100.0, 0.0, 0.0]
    assert scores["AD"] == pytest.approx([0.0, 50.0, 0.0], abs=1e-4)
    assert scores["AG"] == pytest.approx([50.0, 0.0, 0.0], abs=1e-4)


def test_metrics_are_finite_when_the_classifier_is_certain():
    certain = torch.tensor([[100.0, 0.0, 0.0]])  # p_c == 1 in float32
    assert torch.softmax(certain, dim=1)[0, 0].item() == 1.0
    scores = fidelity_scores(certain, certain, torch.zeros(1, 3))
    assert all(torch.isfinite(values).all() for values in scores.values())
    assert scores["AG"].item() == 0.0 and scores["AD"].item() == 0.0


def test_sparseness_and_complexity_equal_quantus():
    quantus = pytest.importorskip("quantus")
    masks = torch.rand(4, 1, 12, 9, generator=torch.Generator().manual_seed(7)) ** 3
    inputs = np.zeros_like(masks.numpy())
    labels = np.zeros(4, dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected_sps = quantus.Sparseness(disable_warnings=True)(
            model=None, x_batch=inputs, y_batch=labels, a_batch=masks.numpy().copy()
        )
        expected_comp = quantus.Complexity(disable_warnings=True)(
            model=None, x_batch=inputs, y_batch=labels, a_batch=masks.numpy().copy()
        )
    assert np.allclose(sparseness(masks.squeeze(1)).numpy(), expected_sps, atol=1e-5)
    assert np.allclose(complexity(masks.squeeze(1)).numpy(), expected_comp, atol=1e-4)


def test_an_all_zero_mask_gives_defined_values():
    mask = torch.zeros(2, 10, 6)
    assert torch.allclose(sparseness(mask), torch.zeros(2), atol=1e-6)
    assert torch.allclose(complexity(mask), torch.full((2,), math.log(60)))


def test_per_example_measures_do_not_depend_on_the_batch_size():
    generator = torch.Generator().manual_seed(8)
    logits, masked_in, masked_out, empty = (torch.randn(4, 5, generator=generator) for _ in range(4))
    mask, log_mag = torch.rand(4, 6, 7, generator=generator), torch.rand(4, 6, 7, generator=generator)

    def scores_of(rows):
        output = types.SimpleNamespace(
            logits=logits[rows],
            logits_masked_in=masked_in[rows],
            logits_masked_out=masked_out[rows],
            logits_empty=empty[rows],
            mask=mask[rows],
            features=types.SimpleNamespace(log_mag=log_mag[rows]),
        )
        return clip_scores(ClipScoring(output, None, None, None))

    together = scores_of(slice(None))
    expected = {"fid_in", "FF", "AI", "AD", "AG", "SPS", "COMP", "energy_kept", "silent_share"}
    assert expected | {"empty_keeps_decision", "fid_in_beyond_empty"} == set(together)
    for index in range(4):
        alone = scores_of(slice(index, index + 1))
        for name, values in together.items():
            assert alone[name].item() == pytest.approx(values[index].item(), abs=1e-5), name


LOSS_HPARAMS = {
    "l_in_w": 4.0,
    "l_out_w": 0.2,
    "masked_out_loss": "negative_cross_entropy",
    "reg_w_l1": 6.4,
    "reg_w_tv": 0.5,
    "g_w": 4.0,
    "crosscortype": "dotp",
    "crosscor_th": 0.6,
    "guidelosstype": "reconstruction",
    "bin_th": 0.35,
    "l_contrast_w": 0.7,
    "l_empty_w": 0.3,
    "l_energy_w": 1.5,
    "energy_scope": "clip",
}


def hand_made_output(seed=9, batch=3, classes=4):
    generator = torch.Generator().manual_seed(seed)
    log_mag = torch.rand(batch, 8, 5, generator=generator)
    clean = log_mag + 0.01  # examples 0 and 2 correlate with their masked-in input ...
    clean[1] = 0.0
    clean[1, 0, 0] = 1.0  # ... example 1 does not
    mask = torch.rand(batch, 7, 5, generator=generator).clamp(0.6, 1.0)
    output = MaskedOutput(
        mixed=MixedBatch(
            wavs=torch.zeros(batch, 16), clean=torch.zeros(batch, 16)
        ),  # noise was added: clean is ``clean``
        features=SpectralFeatures(
            stft=torch.zeros(batch, 8, 5, 2), log_mag=log_mag, classifier_input=torch.zeros(batch, 8, 3)
        ),
        logits=torch.randn(batch, classes, generator=generator),
        mask=mask,
        reference=torch.full_like(mask, 0.5),
        logits_masked_in=torch.randn(batch, classes, generator=generator),
        logits_masked_out=torch.randn(batch, classes, generator=generator),
        logits_empty=torch.randn(batch, classes, generator=generator),
    )
    return output, clean


def direct_loss(output, clean_log_mag, hparams, finetuning):
    """The objective of docs/method.md written out with explicit loops."""
    decision = output.logits.argmax(dim=1)
    batch = decision.shape[0]
    cross_entropy = lambda logits: -torch.log_softmax(logits, dim=1)[torch.arange(batch), decision]  # noqa: E731
    total = hparams["l_in_w"] * cross_entropy(output.logits_masked_in).mean()
    if hparams["masked_out_loss"] == "negative_cross_entropy":
        total = total - hparams["l_out_w"] * cross_entropy(output.logits_masked_out).mean()
    else:  # not_decision: -log(1 - q_out_c)
        q_out = torch.softmax(output.logits_masked_out, dim=1)[torch.arange(batch), decision]
        total = total - hparams["l_out_w"] * torch.log(1 - q_out).mean()
    for b in range(batch):  # the class-contrastive term: log(1 + exp(runner-up logit - decision's logit))
        logits = output.logits_masked_in[b].tolist()
        runner_up = max(value for k, value in enumerate(logits) if k != decision[b])
        total = total + hparams["l_contrast_w"] * math.log1p(math.exp(runner_up - logits[decision[b]])) / batch
        # the beyond-empty term: log(1 + q_empty_c / q_in_c)
        q_in = torch.softmax(output.logits_masked_in[b], dim=0)[decision[b]]
        q_empty = torch.softmax(output.logits_empty[b], dim=0)[decision[b]]
        total = total + hparams["l_empty_w"] * torch.log1p(q_empty / q_in) / batch
    frames = output.mask.shape[1]
    regularisers, guidance = 0.0, 0.0
    for b in range(batch):
        mask = output.mask[b]
        masked_in = mask * output.features.log_mag[b, :frames]
        clean = clean_log_mag[b, :frames]
        rho = (masked_in * clean).mean() / (masked_in.pow(2).mean().sqrt() * clean.pow(2).mean().sqrt())
        keep = float(finetuning and rho >= hparams["crosscor_th"])
        tv = ((mask[1:] - mask[:-1]) ** 2).sum() + ((mask[:, 1:] - mask[:, :-1]) ** 2).sum()
        gate = 1.0
        if hparams["sparsity_gate"]:  # what the masked-in input adds to the decision's probability over the empty input
            q_in = torch.softmax(output.logits_masked_in[b], dim=0)[decision[b]]
            gate = float((q_in - torch.softmax(output.logits_empty[b], dim=0)[decision[b]]).clamp(0, 1))
        magnitude = torch.exp(output.features.log_mag[b, :frames]) - 1  # the input's |STFT|
        kept = (torch.exp(mask * output.features.log_mag[b, :frames]) - 1).pow(2)
        if hparams["energy_scope"] == "clip":  # the share of the clip's energy
            played = kept.sum() / magnitude.pow(2).sum()
        else:  # the share of each frame's energy (every frame here has some), averaged over the frames
            played = sum(kept[t].sum() / magnitude[t].pow(2).sum() for t in range(frames)) / frames
        regularisers += (1 - keep) * gate * (hparams["reg_w_l1"] * mask.abs().mean() + hparams["reg_w_tv"] * tv / 2)
        regularisers += (1 - keep) * gate * hparams["l_energy_w"] * played
        guidance += keep * ((masked_in - clean) ** 2).mean()
    return total + regularisers / batch + hparams["g_w"] * guidance / batch


@pytest.mark.parametrize(
    "finetuning, sparsity_gate, out_loss, energy_scope",
    [
        (False, False, "negative_cross_entropy", "clip"),
        (True, False, "negative_cross_entropy", "clip"),
        (False, True, "negative_cross_entropy", "clip"),
        (False, False, "not_decision", "clip"),
        (False, False, "negative_cross_entropy", "frame"),
    ],
)
def test_the_objective_equals_a_direct_computation(finetuning, sparsity_gate, out_loss, energy_scope):
    hparams = {
        **LOSS_HPARAMS,
        "finetuning": finetuning,
        "sparsity_gate": sparsity_gate,
        "masked_out_loss": out_loss,
        "energy_scope": energy_scope,
        "l1_weight": AdaptiveWeight(LOSS_HPARAMS["reg_w_l1"], 0.3, 0.0),
    }
    brain = LMAC(modules={}, hparams=hparams, run_opts={"device": "cpu"})
    output, clean_log_mag = hand_made_output()
    brain.clean_log_magnitude = lambda given: clean_log_mag if given is output else None
    loss = brain.compute_objectives(output, batch=None, stage=sb.Stage.TRAIN)
    assert loss.item() == pytest.approx(direct_loss(output, clean_log_mag, hparams, finetuning).item(), rel=1e-5)
    if finetuning:
        keep, _ = brain.guidance(output, clean_log_mag[:, : output.mask.shape[1]])
        assert keep.tolist() == [1.0, 0.0, 1.0]


def test_the_guidance_reads_the_interpretation_not_the_reference_filled_input():
    hparams = {**LOSS_HPARAMS, "finetuning": True, "sparsity_gate": False, "crosscortype": "conv"}
    brain = LMAC(modules={}, hparams=hparams, run_opts={"device": "cpu"})
    output, clean_log_mag = hand_made_output()
    reference = torch.linspace(0.0, 2.0, 5)  # a mean spectrum: it correlates with every clip that rises with frequency
    clean = clean_log_mag[:, :7] * 0 + reference + 0.1 * torch.rand(3, 7, 5, generator=torch.Generator().manual_seed(1))
    output.mask = torch.zeros_like(output.mask)  # the empty mask: its interpretation is silence
    output.reference = reference.expand_as(output.mask)
    keep, guidance = brain.guidance(output, clean)
    assert keep.tolist() == [0.0, 0.0, 0.0]
    assert guidance.item() == 0.0


def test_the_l1_weight_of_a_step_is_the_one_before_its_update_and_validation_uses_the_fixed_weight():
    hparams = {
        **LOSS_HPARAMS,
        "finetuning": False,
        "sparsity_gate": False,
        "l_contrast_w": 0.0,
        "l_empty_w": 0.0,
        "l_energy_w": 0.0,
        "reg_w_tv": 0.0,
        "l1_weight": AdaptiveWeight(LOSS_HPARAMS["reg_w_l1"], target=0.3, rate=0.5),
    }
    brain = LMAC(modules={}, hparams=hparams, run_opts={"device": "cpu"})
    output, clean_log_mag = hand_made_output()
    expected = direct_loss(output, clean_log_mag, {**hparams, "sparsity_gate": False}, False).item()
    loss = brain.compute_objectives(output, batch=None, stage=sb.Stage.TRAIN)
    assert loss.item() == pytest.approx(expected, rel=1e-5)  # the weight of this step: reg_w_l1, not the updated one
    decision = output.logits.argmax(dim=1)
    cross_entropy = F.cross_entropy(output.logits_masked_in, decision).item()
    assert float(hparams["l1_weight"].value) == pytest.approx(6.4 * math.exp(0.5 * (0.3 - cross_entropy)), rel=1e-5)
    hparams["l1_weight"].value.fill_(100.0)  # wherever the weight has moved, validation measures with reg_w_l1
    brain.clean_log_magnitude = lambda given: clean_log_mag
    brain.record_stage_outputs = lambda *args: None
    valid_loss = brain.compute_objectives(output, batch=None, stage=sb.Stage.VALID)
    assert valid_loss.item() == pytest.approx(expected, rel=1e-5)


def update_on_two_processes(rank, port, results):
    """One dual-ascent step on each of two gloo processes, each from its own quantity; the value each ends with."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    weight = AdaptiveWeight(1.0, target=0.5, rate=1.0)
    weight.update(torch.tensor([0.0, 2.0][rank]))
    results[rank] = float(weight.value)
    torch.distributed.destroy_process_group()


def test_the_adaptive_weight_is_the_same_on_every_ddp_process():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = torch.multiprocessing.Manager().dict()
    torch.multiprocessing.spawn(update_on_two_processes, args=(port, results), nprocs=2)
    assert results[0] == results[1] == pytest.approx(math.exp(0.5 - 1.0))  # the mean quantity, 1.0


def test_features_match_their_definition_and_an_all_ones_mask_gives_the_input_back_exactly():
    from speechbrain.lobes.models.Cnn14 import Cnn14
    from speechbrain.processing.features import STFT, Filterbank

    from lmac.features import DeviceFilterbank, LogMelInput, spectral_features
    from lmac.models.frozen_classifier import FrozenClassifier

    torch.manual_seed(0)
    compute_stft = STFT(sample_rate=16000, n_fft=1024, hop_length=11.6099, win_length=23.2199)
    compute_fbank = Filterbank(n_mels=80, n_fft=1024, log_mel=False)
    to_input = LogMelInput(DeviceFilterbank(n_mels=80, n_fft=1024, log_mel=False))
    wavs = torch.randn(3, 16000)
    features = spectral_features(wavs, compute_stft, to_input)
    magnitude = torch.view_as_complex(compute_stft(wavs)).abs()
    torch.testing.assert_close(features.log_mag, torch.log1p(magnitude), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(features.classifier_input, torch.log1p(compute_fbank(magnitude)), rtol=1e-5, atol=1e-6)
    masked_in = torch.ones_like(features.log_mag) * features.log_mag
    assert torch.equal(to_input(masked_in), features.classifier_input)
    classifier = FrozenClassifier(Cnn14(mel_bins=80, emb_dim=16, return_reps=True), torch.nn.Linear(16, 4))
    with torch.no_grad():
        logits, _ = classifier(features.classifier_input)
        logits_all_ones, _ = classifier(to_input(masked_in))
    assert torch.equal(logits, logits_all_ones)
    scores = fidelity_scores(logits, logits_all_ones, logits)
    assert scores["AD"].eq(0).all() and scores["AI"].eq(0).all()


def test_clean_energy_share_on_hand_made_masks():
    clean = torch.zeros(2, 10, 8)
    clean[:, 2:5, 1:3] = 4.0  # the clean event: 6 of 80 cells
    clean[:, 6, 6] = 1.0  # below bin_th of the peak: not part of it
    on_the_event = (clean >= 0.35 * 4.0).float()
    on_the_noise = 1.0 - on_the_event
    half_and_half = on_the_event + 0.5 * on_the_noise * (torch.arange(8) < 4)
    masks = torch.stack([on_the_event[0], on_the_noise[0]])
    share = clean_energy_share(masks, clean, 0.35)
    assert share.tolist() == pytest.approx([80 / 6, 0.0])
    uniform = clean_energy_share(torch.full((2, 10, 8), 0.3), clean, 0.35)
    assert uniform.tolist() == pytest.approx([1.0, 1.0])
    mass_on_event = 6 / (6 + 0.5 * (40 - 6))  # 40 cells in the lower half of the bins, 6 of them the event's
    assert clean_energy_share(half_and_half, clean, 0.35).tolist() == pytest.approx([mass_on_event * 80 / 6] * 2)


def test_the_adaptive_l1_weight_follows_dual_ascent_and_is_checkpointed():
    weight = AdaptiveWeight(6.4, target=0.3, rate=0.5, low=0.1, high=20.0)
    expected = 6.4
    for cross_entropy in (0.1, 0.1, 2.0, 0.3):  # under the target: sparser; over it: less sparse
        weight.update(torch.tensor(cross_entropy))
        expected = min(max(expected * math.exp(0.5 * (0.3 - cross_entropy)), 0.1), 20.0)
        assert float(weight.value) == pytest.approx(expected, rel=1e-6)
    for _ in range(50):
        weight.update(torch.tensor(10.0))
    assert float(weight.value) == pytest.approx(0.1)  # within its bounds
    restored = AdaptiveWeight(6.4, target=0.3, rate=0.5)
    restored.load_state_dict(weight.state_dict())
    assert float(restored.value) == pytest.approx(0.1)
    fixed = AdaptiveWeight(6.4, target=0.3, rate=0.0)
    fixed.update(torch.tensor(5.0))
    assert float(fixed.value) == pytest.approx(6.4)  # rate 0: the published fixed weight


def test_the_saved_interpretations_cover_the_classes_before_repeating_one():
    brain = types.SimpleNamespace(
        hparams=types.SimpleNamespace(interpretations_per_stage=3, data_classes=3),
        saved_per_class=collections.Counter(),
    )
    assert InterpreterBrain.clips_to_save(brain, torch.tensor([0, 0, 0, 1, 1, 2])) == [0, 3, 5]
    assert InterpreterBrain.clips_to_save(brain, torch.tensor([2, 1])) == []  # the stage's three are saved
    brain.hparams.interpretations_per_stage = 8
    brain.saved_per_class.clear()
    assert InterpreterBrain.clips_to_save(brain, torch.tensor([0, 0, 0, 0, 1, 2])) == [
        0,
        1,
        2,
        4,
        5,
    ]  # at most 3 a class
    assert InterpreterBrain.clips_to_save(brain, torch.tensor([2, 2, 2, 1])) == [0, 1, 3]  # then 8 in all


def test_the_not_decision_term_stops_pushing_once_the_decision_is_gone_and_the_published_one_does_not():
    decision = torch.tensor([0])
    gradients = {}
    for kind in ("negative_cross_entropy", "not_decision"):
        logits = torch.tensor([[-12.0, 3.0, 1.0]], requires_grad=True)  # q_0 about 3e-7: the decision is gone
        masked_out_loss(kind, logits, decision).sum().backward()
        gradients[kind] = logits.grad[0, 0].item()
    assert gradients["negative_cross_entropy"] == pytest.approx(1.0, abs=1e-5)  # 1 - q_0
    assert abs(gradients["not_decision"]) < 1e-5  # q_0
    q = torch.tensor([[0.2, 0.5, 0.3]])
    assert masked_out_loss("not_decision", q.log(), decision).item() == pytest.approx(-math.log(0.8), rel=1e-5)


def test_an_unknown_masked_out_term_is_named_with_the_accepted_ones():
    with pytest.raises(
        ValueError, match=r"masked_out_loss='neg_ce'; accepted values are \['negative_cross_entropy', 'not_decision'\]"
    ):
        masked_out_loss("neg_ce", torch.zeros(1, 3), torch.tensor([0]))
