"""Gradient interpretation baselines (captum), as masks over the linear STFT like L-MAC's.

Each method attributes the classifier's decision ``c = argmax logits`` to
its input, the ``log1p``-mel spectrogram ``[batch, frames, n_mels]``:

- ``saliency``: ``|d logit_c / d x|``;
- ``smoothgrad``: the saliency averaged over ``smoothgrad_samples`` noisy
  copies of the input (Gaussian noise, ``smoothgrad_noise`` times the
  batch's input range);
- ``integrated_gradients``: from a silent input (all zeros), in
  ``ig_steps`` steps;
- ``gradcam``: Grad-CAM on the output of ``gradcam_layer`` (by default
  CNN14's last convolutional block), upsampled bilinearly to the input grid.

Every attribution map becomes a mask the same way:

1. mel to linear: each STFT bin takes the mean of the attributions of the
   mel bands that cover it, weighted by the filterbank
   (``A_lin[t, f] = sum_m A[t, m] W[f, m] / sum_m W[f, m]``);
2. its positive part (evidence for the decision) divided by its largest
   value per clip, so the mask is in ``[0, 1]`` with a 1 at the most
   relevant cell (an attribution with no positive value gives a zero mask).

The mask multiplies the ``log1p`` magnitude exactly as L-MAC's does, so
the same metrics apply and the interpretation can be listened to.
"""

import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency

GRADIENT_METHODS = ("saliency", "smoothgrad", "integrated_gradients", "gradcam")


def filterbank_matrix(compute_fbank, num_bins, device=None):
    """The ``[num_bins, n_mels]`` weights of a linear SpeechBrain ``Filterbank`` (``log_mel=False``).

    Read off by filtering the identity, so it is the matrix the features use.

    Example
    -------
    >>> from speechbrain.processing.features import Filterbank
    >>> filterbank_matrix(Filterbank(n_mels=8, n_fft=64, log_mel=False), 33).shape
    torch.Size([33, 8])
    """
    identity = torch.eye(num_bins, device=device)[None]  # [1, num_bins, num_bins]: one "frame" per bin
    return compute_fbank(identity)[0]


def mel_to_linear(attribution, fbank_matrix):
    """Maps ``[batch, frames, n_mels]`` to ``[batch, frames, freq]``: the filterbank-weighted mean per bin.

    A bin no mel band covers gets 0.

    Example
    -------
    >>> weights = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 0.0]])
    >>> mel_to_linear(torch.tensor([[[2.0, 4.0]]]), weights)
    tensor([[[2., 3., 0.]]])
    """
    coverage = fbank_matrix.sum(dim=1)  # [freq]
    share = fbank_matrix / coverage.clamp_min(torch.finfo(fbank_matrix.dtype).tiny)[:, None]
    return attribution @ share.T


def attribution_mask(attribution):
    """The positive part of ``[batch, ...]`` divided by its per-example maximum: a mask in ``[0, 1]``.

    Example
    -------
    >>> attribution_mask(torch.tensor([[-1.0, 1.0, 4.0], [-2.0, -1.0, 0.0]]))
    tensor([[0.0000, 0.2500, 1.0000],
            [0.0000, 0.0000, 0.0000]])
    """
    positive = attribution.clamp_min(0)
    peak = positive.flatten(1).amax(dim=1).view(-1, *([1] * (attribution.dim() - 1)))
    return positive / peak.clamp_min(torch.finfo(positive.dtype).tiny)


def submodule(model, dotted_name):
    """The submodule of ``model`` at ``dotted_name`` (e.g. ``embedding_model.conv_block6``), with a clear error."""
    try:
        return model.get_submodule(dotted_name)
    except AttributeError as error:
        names = [name for name, _ in model.named_modules() if name]
        raise ValueError(
            f"gradcam_layer={dotted_name!r} is not a layer of the classifier; some of its layers: {names[-8:]}."
        ) from error


class GradientMask:
    """Masks over the linear STFT from a captum attribution of the classifier's decision.

    Arguments
    ---------
    method : str
        One of ``GRADIENT_METHODS``.
    classifier : torch.nn.Module
        Maps ``[batch, frames, n_mels]`` to ``(logits, ...)`` (a ``FrozenClassifier``).
    compute_fbank : speechbrain.processing.features.Filterbank
        The linear filterbank of the features.
    gradcam_layer : str
        Dotted name of the layer Grad-CAM reads, inside ``classifier``.
    smoothgrad_samples : int
    smoothgrad_noise : float
        Noise standard deviation as a share of the batch's input range.
    ig_steps : int
    """

    def __init__(self, method, classifier, compute_fbank, gradcam_layer="embedding_model.conv_block6",
                 smoothgrad_samples=8, smoothgrad_noise=0.15, ig_steps=32):  # fmt: skip
        if method not in GRADIENT_METHODS:
            raise ValueError(f"int_method={method!r} is not a gradient method; accepted: {GRADIENT_METHODS}.")
        self.name = method
        self.classifier = classifier
        self.compute_fbank = compute_fbank
        self.smoothgrad_samples = smoothgrad_samples
        self.smoothgrad_noise = smoothgrad_noise
        self.ig_steps = ig_steps
        self.layer = submodule(classifier, gradcam_layer) if method == "gradcam" else None
        self._weights = None  # the filterbank matrix, read once

    def logits(self, mel_input):
        """The classifier's logits ``[batch, n_classes]`` alone, as captum expects."""
        return self.classifier(mel_input)[0]

    def mel_attribution(self, mel_input, decision):
        """Attribution of ``decision`` ``[batch]`` over ``mel_input`` ``[batch, frames, n_mels]``, same shape."""
        if self.name == "saliency":
            return Saliency(self.logits).attribute(mel_input, target=decision, abs=True)
        if self.name == "smoothgrad":
            spread = (mel_input.max() - mel_input.min()).item()
            return NoiseTunnel(Saliency(self.logits)).attribute(
                mel_input, nt_type="smoothgrad", nt_samples=self.smoothgrad_samples,
                nt_samples_batch_size=mel_input.shape[0], stdevs=self.smoothgrad_noise * max(spread, 1e-6),
                target=decision, abs=True,
            )  # fmt: skip
        if self.name == "integrated_gradients":
            return IntegratedGradients(self.logits).attribute(
                mel_input, baselines=0.0, target=decision, n_steps=self.ig_steps, internal_batch_size=mel_input.shape[0]
            )
        cam = LayerGradCam(self.logits, self.layer).attribute(mel_input, target=decision, relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(mel_input.shape[1:]), interpolate_mode="bilinear")[:, 0]

    def __call__(self, features, logits, feature_maps=None):
        """The mask ``[batch, frames, freq]`` of a batch.

        Arguments
        ---------
        features : SpectralFeatures
            Of the interpreted input.
        logits : torch.Tensor
            ``[batch, n_classes]``; the decision is their argmax.
        feature_maps : tuple of torch.Tensor, optional
            Unused; part of the mask-method interface.
        """
        decision = logits.argmax(dim=1)
        mel_input = features.mel_input.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            attribution = self.mel_attribution(mel_input, decision).detach()
        if self._weights is None or self._weights.device != attribution.device:
            self._weights = filterbank_matrix(self.compute_fbank, features.log_mag.shape[2], attribution.device)
        return attribution_mask(mel_to_linear(attribution, self._weights))
