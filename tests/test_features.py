"""Device-resident features: SpeechBrain's numbers, constants built once, moved with the Brain's modules."""

import os

import pytest
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.processing.features import ISTFT, STFT, Filterbank, InputNormalization

import lmac.training.lmac as lmac_brain
from lmac.data.esc50 import prepare_datasets
from lmac.features import (
    DeviceFilterbank,
    DeviceISTFT,
    DeviceSTFT,
    LogMelInput,
    mel_to_linear,
    sentence_mean_norm,
    spectral_features,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HPARAMS = os.path.join(REPO, "hparams", "lmac_cnn14.yaml")


@pytest.mark.parametrize("n_fft, hop_ms, win_ms", [(1024, 11.6099, 23.2199), (400, 10, 25)])
def test_stft_and_istft_give_speechbrains_numbers(n_fft, hop_ms, win_ms):
    settings = {"sample_rate": 16000, "n_fft": n_fft, "hop_length": hop_ms, "win_length": win_ms}
    wavs = torch.randn(3, 16000, generator=torch.Generator().manual_seed(0))
    ours, theirs = DeviceSTFT(**settings)(wavs), STFT(**settings)(wavs)
    assert ours.shape == theirs.shape and torch.allclose(ours, theirs, atol=1e-6)
    back, back_theirs = DeviceISTFT(**settings)(ours, sig_length=16000), ISTFT(**settings)(theirs, sig_length=16000)
    assert torch.allclose(back, back_theirs, atol=1e-6)


@pytest.mark.parametrize("log_mel", [False, True])
@pytest.mark.parametrize("shape", [(2, 50, 513), (2, 50, 513, 3)])
def test_filterbank_gives_speechbrains_numbers(log_mel, shape):
    settings = {"n_mels": 80, "n_fft": 1024, "sample_rate": 16000, "log_mel": log_mel}
    spectrogram = torch.rand(shape, generator=torch.Generator().manual_seed(1)) * 10
    ours, theirs = DeviceFilterbank(**settings)(spectrogram), Filterbank(**settings)(spectrogram)
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=1e-6)


def test_a_learnable_or_randomised_filterbank_is_refused_with_the_setting():
    with pytest.raises(ValueError, match=r"freeze=False and param_rand_factor=0.0; use speechbrain"):
        DeviceFilterbank(n_mels=40, freeze=False)
    with pytest.raises(ValueError, match=r"freeze=True and param_rand_factor=0.1"):
        DeviceFilterbank(n_mels=40, param_rand_factor=0.1)


def build_tiny_lmac(data, output_folder):
    """An L-MAC brain of the recipe's YAML (width 1/32, 3 classes) with its optimiser, a training batch, the hparams."""
    overrides = {
        "data_folder": data["esc50_folder"],
        "output_folder": str(output_folder),
        "use_pretrained": False,
        "width": 0.03125,
        "n_classes": 3,
        "interpretations_per_stage": 0,
    }
    with open(HPARAMS, encoding="utf-8") as file:
        hparams = load_hyperpyyaml(file, overrides)
    datasets, _ = prepare_datasets(hparams)
    brain = lmac_brain.LMAC(
        modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams, run_opts={"device": "cpu"}
    )
    brain.init_optimizers()
    batch = next(iter(sb.dataio.dataloader.make_dataloader(datasets["train"], batch_size=2)))
    return brain, batch, hparams


@pytest.fixture
def tiny_lmac(synthetic_data, tmp_path):
    return build_tiny_lmac(synthetic_data, tmp_path)


def test_the_filterbank_matrix_is_built_once_over_training_and_evaluation_steps(synthetic_data, tmp_path, monkeypatch):
    built = []
    build = Filterbank._create_fbank_matrix

    def counted_build(self, *args):
        built.append(type(self).__name__)
        return build(self, *args)

    monkeypatch.setattr(Filterbank, "_create_fbank_matrix", counted_build)
    brain, batch, _ = build_tiny_lmac(synthetic_data, tmp_path)
    for _ in range(3):
        brain.fit_batch(batch)  # three filterbank applications each: the input, masked-in and masked-out
    brain.on_stage_start(sb.Stage.TEST)
    brain.evaluate_batch(batch, sb.Stage.TEST)
    assert built == ["DeviceFilterbank"]


def test_feature_constants_move_with_the_brains_modules_and_stay_out_of_checkpoints(tiny_lmac):
    brain, _, hparams = tiny_lmac
    for name in ("compute_stft", "compute_istft", "classifier_input"):
        assert brain.modules[name] is hparams[name]
        assert brain.modules[name].state_dict() == {}, "constants of the settings, not checkpointed state"
    brain.modules.double()
    assert hparams["compute_stft"].window.dtype == torch.float64
    assert hparams["compute_istft"].window.dtype == torch.float64
    assert hparams["classifier_input"].compute_fbank.fbank_matrix.dtype == torch.float64
    features = spectral_features(
        torch.randn(1, 16000, dtype=torch.float64), hparams["compute_stft"], hparams["classifier_input"]
    )
    assert features.classifier_input.dtype == torch.float64


def test_the_sentence_mean_norm_is_speechbrain_s_and_a_masked_input_takes_its_clip_s_mean():
    torch.manual_seed(0)
    clip = torch.rand(3, 40, 12) * 5
    expected = InputNormalization(norm_type="sentence", std_norm=False)(clip)
    torch.testing.assert_close(sentence_mean_norm(clip), expected)
    torch.testing.assert_close(sentence_mean_norm(clip), clip - clip.mean(dim=1, keepdim=True))
    masked = clip * (torch.rand(3, 40, 12) > 0.7)
    torch.testing.assert_close(sentence_mean_norm(masked, statistics_of=clip), masked - clip.mean(dim=1, keepdim=True))


def test_a_mel_input_makes_its_share_matrix_once_and_then_only_multiplies(monkeypatch):
    import lmac.features as features

    to_input = LogMelInput(DeviceFilterbank(n_mels=8, n_fft=64, log_mel=False))
    logits = torch.rand(2, 5, 8)
    expected = mel_to_linear(logits, to_input.compute_fbank.fbank_matrix, every_bin=True)
    calls = []
    nearest = features.nearest_covered_bin
    monkeypatch.setattr(features, "nearest_covered_bin", lambda covered: calls.append(1) or nearest(covered))
    for _ in range(3):  # a decoder's forwards: the boolean indexing (a host sync on a GPU) happens once
        torch.testing.assert_close(to_input.to_linear(logits, every_bin=True), expected)
    assert len(calls) == 1
