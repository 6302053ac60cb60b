"""The width-scaled CNN14 family and mask decoding for any clip length."""

import pytest
import torch
from speechbrain.lobes.models.Cnn14 import Cnn14, CNN14PSI_stft
from speechbrain.processing.features import STFT

from lmac.features import DeviceFilterbank, DeviceISTFT, DeviceSTFT, LogMelInput
from lmac.models.cnn14 import ScaledCnn14, cnn14_embedding_model, decode_any_length
from lmac.training.brain import InterpreterBrain
from lmac.training.device import set_weight_layout

HOP_MS, WIN_MS = 11.6099, 23.2199


def test_full_width_is_the_published_architecture():
    published = Cnn14(mel_bins=80, emb_dim=2048, return_reps=True)
    assert type(cnn14_embedding_model(80, 1)) is Cnn14
    scaled = ScaledCnn14(mel_bins=80, width=1)
    assert {k: v.shape for k, v in scaled.state_dict().items()} == {
        k: v.shape for k, v in published.state_dict().items()
    }
    scaled.load_state_dict(published.state_dict())
    scaled.eval(), published.eval()
    x = torch.rand(1, 100, 80)
    with torch.no_grad():
        (ours, our_maps), (theirs, their_maps) = scaled(x), published(x)
    assert torch.equal(ours, theirs) and all(torch.equal(a, b) for a, b in zip(our_maps, their_maps))


@pytest.mark.parametrize("width, emb_dim", [(1 / 16, 128), (1 / 8, 256), (0.25, 512)])
def test_scaled_models_fit_the_published_decoder_structure(width, emb_dim):
    model = cnn14_embedding_model(80, width)
    assert model.emb_dim == emb_dim
    decoder = CNN14PSI_stft(dim=emb_dim)
    _, feature_maps = model(torch.rand(2, 431, 80))
    assert [h.shape[1] for h in feature_maps] == [emb_dim, emb_dim // 2, emb_dim // 4, emb_dim // 8]
    assert decoder(feature_maps).shape[-1] == 513
    published_parameters = sum(p.numel() for p in Cnn14(80, 2048).parameters())
    assert sum(p.numel() for p in model.parameters()) < published_parameters * width


@pytest.fixture(scope="module")
def tiny_models():
    torch.manual_seed(0)
    model = ScaledCnn14(mel_bins=80, width=1 / 32).eval()
    return model, CNN14PSI_stft(dim=model.emb_dim).eval()


def frames_for(seconds):
    samples = int(seconds * 16000)
    return STFT(sample_rate=16000, hop_length=HOP_MS, win_length=WIN_MS, n_fft=1024)(torch.zeros(1, samples)).shape[1]


@pytest.mark.parametrize(
    "num_frames", [*range(40, 140), frames_for(0.5), frames_for(5), frames_for(7.3), frames_for(12)]
)
def test_masks_have_exactly_the_input_frames(tiny_models, num_frames):
    model, decoder = tiny_models
    with torch.no_grad():
        _, feature_maps = model(torch.rand(1, num_frames, 80))
        mask = decode_any_length(decoder, feature_maps, num_frames)
    assert mask.shape == (1, num_frames, 513)


def test_padding_leaves_the_published_frames_alone(tiny_models):
    model, decoder = tiny_models
    with torch.no_grad():
        _, feature_maps = model(torch.rand(1, 431, 80))  # 5 s: the published decoder gives 425 frames
        published = decoder(feature_maps)[:, 0]
        ours = decode_any_length(decoder, feature_maps, 431)
    assert published.shape[1] == 425
    # Only the last ~40 frames (the reach of the transposed convolutions) see the padded steps.
    assert torch.allclose(ours[:, :380], published[:, :380], atol=1e-6)


@pytest.mark.parametrize("seconds", [0.5, 1.0, 2.7, 5.0, 8.1, 12.0])
def test_interpretations_keep_the_input_length(tiny_models, seconds):
    model, decoder = tiny_models
    feature_modules = {
        "compute_stft": DeviceSTFT(sample_rate=16000, hop_length=HOP_MS, win_length=WIN_MS, n_fft=1024),
        "compute_istft": DeviceISTFT(sample_rate=16000, hop_length=HOP_MS, win_length=WIN_MS, n_fft=1024),
        "classifier_input": LogMelInput(DeviceFilterbank(n_mels=80, n_fft=1024, sample_rate=16000, log_mel=False)),
    }
    brain = InterpreterBrain(modules=feature_modules, run_opts={"device": "cpu"})
    wavs = torch.randn(2, int(seconds * 16000))
    features = brain.compute_features(wavs)
    with torch.no_grad():
        _, feature_maps = model(features.classifier_input)
        mask = torch.sigmoid(decode_any_length(decoder, feature_maps, features.log_mag.shape[1]))
    waveform = brain.interpretation_waveform(mask, features, wavs.shape[1])
    assert waveform.shape == wavs.shape and torch.isfinite(waveform).all()
    full = brain.interpretation_waveform(torch.ones_like(mask), features, wavs.shape[1])
    assert torch.allclose(full[:, 400:-400], wavs[:, 400:-400], atol=1e-3), "a mask of ones must give back the input"


def test_channels_last_weights_give_the_same_masks_and_can_be_undone():
    torch.manual_seed(0)
    model = ScaledCnn14(mel_bins=80, width=1 / 32).eval()
    decoder = CNN14PSI_stft(dim=model.emb_dim).eval()
    pair = torch.nn.ModuleDict({"classifier": model, "psi": decoder})
    mel_input = torch.rand(2, 200, 80)

    def masks():
        with torch.no_grad():
            return decode_any_length(decoder, model(mel_input)[1], 200)

    default = masks()
    assert set_weight_layout(pair, forward_only=True) is pair
    assert decoder.convt8.weight.is_contiguous(memory_format=torch.channels_last)
    assert not decoder.convt8.weight.is_contiguous()
    assert torch.allclose(masks(), default, atol=1e-5)
    set_weight_layout(pair, forward_only=False)
    assert decoder.convt8.weight.is_contiguous() and model.conv_block1.conv1.weight.is_contiguous()


def test_pictures_show_seconds_and_kilohertz_and_one_colour_scale_for_input_and_interpretation():
    from lmac.reporting.figures import spectrogram_figure

    log_mag = torch.rand(431, 513) * 3
    mask = torch.rand(431, 513)
    figure = spectrogram_figure(log_mag, mask, "clip", hop_length=186, sample_rate=16000)
    axes = figure.axes[:3]  # then the colour bars
    assert [axis.get_xlabel() for axis in axes] == ["time (s)"] * 3 and axes[0].get_ylabel() == "frequency (kHz)"
    left, right, bottom, top = axes[0].images[0].get_extent()
    assert right - left == pytest.approx(431 * 186 / 16000) and top - bottom == pytest.approx(8 + 8 / 512)
    assert left == pytest.approx(-186 / 16000 / 2) and bottom == pytest.approx(-8 / 512 / 2)
    input_scale, mask_scale, interpretation_scale = (axis.images[0].get_clim() for axis in axes)
    assert input_scale == interpretation_scale == (0, pytest.approx(log_mag.max().item())) and mask_scale == (0, 1)
