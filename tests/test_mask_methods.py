"""Mask methods: the gradient methods each find the one band a toy classifier reads; the registry; the interface."""

import pytest
import torch

import lmac.recipes.eval as lmac_eval
from lmac.features import DeviceFilterbank, LogMelInput, SpectralFeatures, mel_to_linear
from lmac.methods import (
    MASK_METHODS,
    CaptumMask,
    GradCAMMask,
    IntegratedGradientsMask,
    LMACMask,
    MaskMethod,
    SaliencyMask,
    SmoothGradMask,
    attribution_mask,
)

N_FFT, N_MELS, FRAMES = 256, 32, 24
BAND = slice(10, 14)  # the mel bands the toy classifier reads


class BandClassifier(torch.nn.Module):
    """Reads mel bands ``BAND`` only: zeroes the others, then a bias-free convolution, pooling and a head.

    Its weights are positive for class 0 and negative for class 1, so on a
    positive input it decides class 0 and every gradient points into the band.
    """

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.head = torch.nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.rand(self.conv.weight.shape, generator=torch.Generator().manual_seed(0)))
            self.head.weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))
        band = torch.zeros(N_MELS)
        band[BAND] = 1.0
        self.register_buffer("band", band)
        self.requires_grad_(False)

    def forward(self, classifier_input):
        hidden = torch.relu(self.conv((classifier_input * self.band)[:, None]))  # [batch, 4, frames, mels]
        return self.head(hidden.mean(dim=(2, 3))), (hidden,)


@pytest.fixture(scope="module")
def toy():
    """The toy classifier, its log-mel input and the features of two random positive inputs."""
    fbank = LogMelInput(DeviceFilterbank(n_mels=N_MELS, n_fft=N_FFT, log_mel=False))
    log_mag = torch.rand(2, FRAMES, N_FFT // 2 + 1, generator=torch.Generator().manual_seed(1)) + 0.1
    mel_input = torch.log1p(fbank.compute_fbank(torch.expm1(log_mag)))
    features = SpectralFeatures(stft=None, log_mag=log_mag, classifier_input=mel_input)
    classifier = BandClassifier()
    logits, _ = classifier(mel_input)
    return {"fbank": fbank, "features": features, "classifier": classifier, "logits": logits}


def bins_reached_by(mels, fbank):
    """Boolean ``[freq]``: the linear bins that any of the mel bands ``mels`` covers."""
    return fbank.compute_fbank.fbank_matrix[:, mels].sum(dim=1) > 0


GRADIENT_METHODS = {
    "saliency": lambda classifier, fbank: SaliencyMask(classifier, fbank),
    "smoothgrad": lambda classifier, fbank: SmoothGradMask(classifier, fbank, samples=8, noise=0.15),
    "integrated_gradients": lambda classifier, fbank: IntegratedGradientsMask(classifier, fbank, steps=8),
    "gradcam": lambda classifier, fbank: GradCAMMask(classifier, fbank, layer="conv"),
}


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_mask_concentrates_on_the_band_the_classifier_reads(toy, method):
    mask = GRADIENT_METHODS[method](toy["classifier"], toy["fbank"]).mask(toy["features"], toy["logits"], None)
    assert mask.shape == toy["features"].log_mag.shape
    assert mask.min() >= 0 and torch.allclose(mask.flatten(1).amax(dim=1), torch.ones(2))
    # Grad-CAM's map may spread one band on each side (its 3x3 convolution); gradients may not.
    margin = 1 if method == "gradcam" else 0
    reached = bins_reached_by(slice(BAND.start - margin, BAND.stop + margin), toy["fbank"])
    assert reached.float().mean() < 0.3  # a uniform mask would put less than 30% of its mass there
    share_inside = mask[:, :, reached].sum() / mask.sum()
    assert share_inside > 0.99


TWO_BANDS = (slice(4, 8), slice(20, 24))  # the mel bands of class 0 and of class 1


class TwoBandClassifier(torch.nn.Module):
    """Class ``k``'s logit is the mean of a positive convolution of its own mel bands ``TWO_BANDS[k]``: each class
    reads its own bands, so a class-conditional mask of class ``k`` belongs in them."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 2, 3, padding=1, groups=2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.rand(self.conv.weight.shape, generator=torch.Generator().manual_seed(0)))
        bands = torch.zeros(2, N_MELS)
        for index, band in enumerate(TWO_BANDS):
            bands[index, band] = 1.0
        self.register_buffer("bands", bands)
        self.requires_grad_(False)

    def forward(self, classifier_input):
        hidden = self.conv(classifier_input[:, None] * self.bands[None, :, None, :])  # [batch, 2, frames, mels]
        return hidden.mean(dim=(2, 3)), (hidden,)


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_a_class_conditional_mask_lies_where_the_class_given_reads(toy, method):
    classifier = TwoBandClassifier()
    interpreter = GRADIENT_METHODS[method](classifier, toy["fbank"])
    logits, _ = classifier(toy["features"].classifier_input)
    assert interpreter.class_conditional
    for index, band in enumerate(TWO_BANDS):
        mask = interpreter.mask_for_classes(toy["features"], logits, None, torch.full((2,), index))
        margin = 1 if method == "gradcam" else 0  # Grad-CAM's map may spread one band on each side
        reached = bins_reached_by(slice(band.start - margin, band.stop + margin), toy["fbank"])
        assert mask[:, :, reached].sum() / mask.sum() > 0.99, index


def test_l_mac_interprets_the_decision_only():
    decoder = torch.nn.Identity()
    assert not LMACMask.class_conditional
    with pytest.raises(NotImplementedError, match="lmac interprets the decision only"):
        LMACMask(decoder).mask_for_classes(None, None, None, torch.tensor([1]))


def test_mel_to_linear_is_the_weighted_mean_of_the_covering_bands():
    weights = torch.rand(9, 4)
    weights[0] = 0.0  # a bin no band covers
    attribution = torch.randn(2, 5, 4)
    expected = torch.zeros(2, 5, 9)
    for bin_index in range(1, 9):
        for mel in range(4):
            expected[:, :, bin_index] += attribution[:, :, mel] * weights[bin_index, mel] / weights[bin_index].sum()
    torch.testing.assert_close(mel_to_linear(attribution, weights), expected)


def test_attribution_mask_keeps_the_positive_part_scaled_to_one():
    attribution = torch.tensor([[[-3.0, 2.0], [0.5, 1.0]]])
    torch.testing.assert_close(attribution_mask(attribution), torch.tensor([[[0.0, 1.0], [0.25, 0.5]]]))


def test_an_unknown_gradcam_layer_is_named(toy):
    with pytest.raises(ValueError, match="gradcam_layer='conv_block9'"):
        GradCAMMask(toy["classifier"], toy["fbank"], layer="conv_block9")


def test_an_unknown_method_is_named_with_the_registry():
    with pytest.raises(
        ValueError, match=r"int_method='lime': unknown method\(s\) \['lime'\]; accepted: lmac, saliency, "
    ):
        lmac_eval.methods_of({"compare": None, "int_method": "lime"})


def test_the_registry_holds_one_class_per_method_under_its_name():
    assert list(MASK_METHODS) == [
        "lmac",
        "saliency",
        "smoothgrad",
        "integrated_gradients",
        "gradcam",
        "l2i",
        "empty_mask",
        "all_ones_mask",
    ]
    assert list(lmac_eval.METHODS) == list(MASK_METHODS)
    for name, method in MASK_METHODS.items():
        assert issubclass(method, MaskMethod) and method.name == name and method.title
        assert method.forward_only == (not issubclass(method, CaptumMask)), name


def test_a_new_method_is_one_class_with_the_interface(toy):
    class TopBinsMask(MaskMethod):
        name, title = "top_bins", "Top bins"

        @classmethod
        def from_hparams(cls, hparams, modules):
            return cls()

        def mask(self, features, logits, feature_maps):
            return (features.log_mag >= features.log_mag.amax(dim=2, keepdim=True)).float()

    mask = TopBinsMask.from_hparams({}, {}).mask(toy["features"], toy["logits"], None)
    assert mask.shape == toy["features"].log_mag.shape and set(mask.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(TypeError, match="abstract"):
        type("NoMask", (MaskMethod,), {"name": "none"})()


class LinearOnInput(torch.nn.Module):
    """``logits = mean over frames of the input @ weights``: integrated gradients are exact for it."""

    def __init__(self, weights):
        super().__init__()
        self.register_buffer("weights", weights)

    def forward(self, classifier_input):
        return classifier_input.mean(dim=1) @ self.weights, ()


def test_integrated_gradients_start_from_silence_in_the_clip_s_own_normalisation():
    to_input = LogMelInput(DeviceFilterbank(n_mels=N_MELS, n_fft=N_FFT, log_mel=False), mean_norm=True)
    log_mag = torch.rand(2, FRAMES, N_FFT // 2 + 1, generator=torch.Generator().manual_seed(4)) * 3
    features = SpectralFeatures(None, log_mag, to_input(log_mag))
    weights = torch.randn(N_MELS, 2, generator=torch.Generator().manual_seed(5))
    method = IntegratedGradientsMask(LinearOnInput(weights), to_input, steps=8)
    decision = torch.tensor([0, 1])
    attribution = method.input_attribution(features.classifier_input.clone().requires_grad_(True), decision, features)
    # For a linear classifier IG is (input - baseline) * gradient; silence's input is log1p-mel(0) - the clip's mean,
    # so input - baseline is the clip's log1p-mel itself (not its mean-removed input, the zero baseline's answer).
    log_mel = torch.log1p(to_input.compute_fbank(torch.expm1(log_mag)))
    expected = log_mel * weights.T[decision][:, None, :] / FRAMES
    torch.testing.assert_close(attribution, expected, rtol=1e-4, atol=1e-6)
