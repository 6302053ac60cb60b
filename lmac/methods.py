"""Interpretation methods: one interface, one class per method, one registry.

Every method computes a mask over the linear STFT of the interpreted input
from what the frozen classifier gives (``features``, ``logits``,
``feature_maps``): ``mask(features, logits, feature_maps)`` returns
``[batch, frames, freq]`` in ``[0, 1]``. The mask multiplies ``log1p|STFT|``
exactly as L-MAC's does, so every method gets the same metrics and a
listenable interpretation (``docs/method.md``).

- ``lmac``: the trained L-MAC decoder, ``sigmoid(psi(feature_maps, frames))``.
- Gradient methods (captum), attributing the decision ``c = argmax logits``
  to the classifier's input ``[batch, frames, bins]`` (CNN14's: ``log1p``-mel):
  ``saliency``, ``|d logit_c / d x|``; ``smoothgrad``, the saliency averaged
  over ``smoothgrad_samples`` noisy copies (Gaussian noise,
  ``smoothgrad_noise`` times the batch's input range);
  ``integrated_gradients``, from a silent input in ``ig_steps`` steps;
  ``gradcam``, Grad-CAM on the classifier family's ``gradcam_layer``,
  upsampled to the input's grid. Each attribution becomes a mask the same
  way: onto the STFT grid by the input's ``to_linear`` (for mel inputs each
  STFT bin takes the filterbank-weighted mean of the bands covering it,
  ``A_lin[t, f] = sum_m A[t, m] W[f, m] / sum_m W[f, m]``), then its
  positive part divided by its largest value per clip (no positive value: a
  zero mask).
- ``empty_mask`` and ``all_ones_mask``: the reference rows of a comparison,
  a mask that removes everything and one that keeps everything.
- ``l2i``: Listen to Interpret (Parekh et al., NeurIPS 2022), trained by
  ``train_l2i.py``: the share ``X_rel / X_all`` of the NMF reconstruction of
  the input that the components relevant to the decision explain.

The gradient methods and L2I are class-conditional (``class_conditional``):
``mask_for_classes`` interprets any class given, not only the decision.
L-MAC's decoder reads the feature maps alone and interprets the decision.

A new method is one ``MaskMethod`` subclass and one line in ``MASK_METHODS``;
``eval.py --int_method`` and ``--compare`` read the registry.
"""

import abc
import copy
import os

import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency

from lmac.checks import check_l2i_folder, check_lmac_decoder
from lmac.loading import load_l2i_run, load_lmac_decoder
from lmac.models.cnn14 import fit_feature_maps
from lmac.models.families import check_l2i_family
from lmac.models.frozen_classifier import named_submodule
from lmac.training.checkpointing import BEST_CHECKPOINT_KEY
from lmac.training.device import set_weight_layout


class MaskMethod(abc.ABC):
    """A way to compute a mask over the linear STFT from the frozen classifier's outputs.

    Class attributes: ``name`` (the ``--int_method`` value), ``title`` (for
    tables and reports), ``forward_only`` (True when nothing is
    differentiated through the models, so they run with channels-last weights)
    and ``class_conditional`` (True when ``mask_for_classes`` interprets any
    class, not only the decision).
    """

    name = None
    title = None
    forward_only = True
    class_conditional = False

    @classmethod
    @abc.abstractmethod
    def from_hparams(cls, hparams, modules):
        """The method built from the recipe's ``hparams`` and its (loaded) ``modules``: the classifier, features and
        decoder. A method with weights of its own loads them here."""

    @classmethod
    def check_settings(cls, hparams):
        """Raises before any work when ``hparams`` cannot build this method, naming the setting (nothing to check here)."""

    @classmethod
    def applies_to(cls, hparams):
        """True when the method can interpret the classifier family of ``hparams`` (``--compare all`` keeps those)."""
        return True

    @classmethod
    def results_folder(cls, eval_folder):
        """Where ``eval.py`` writes this method's results: ``<eval_folder>/<name>``."""
        return os.path.join(eval_folder, cls.name)

    @abc.abstractmethod
    def mask(self, features, logits, feature_maps):
        """The mask ``[batch, frames, freq]`` in ``[0, 1]``.

        Arguments
        ---------
        features : features.SpectralFeatures
            Of the interpreted input (``log_mag`` ``[batch, frames, freq]``,
            ``classifier_input`` ``[batch, frames, bins]``).
        logits : torch.Tensor
            ``[batch, n_classes]``: the classifier's answer; its argmax is the interpreted decision.
        feature_maps : tuple of torch.Tensor
            The feature maps the classifier family's decoder reads (CNN14: four, deepest first).
        """

    def mask_for_classes(self, features, logits, feature_maps, classes):
        """The mask ``[batch, frames, freq]`` of what makes the classifier decide ``classes`` ``[batch]`` (class indices)
        instead of its decision: "what would have made it that class". Only ``class_conditional`` methods have it."""
        raise NotImplementedError(f"{self.name} interprets the decision only; it has no mask of another class.")

    def on_classifier(self, classifier):
        """This method for another classifier (the model-randomisation check's): a method that reads the
        classifier only through ``mask``'s arguments is the same; one that holds it returns a copy holding ``classifier``."""
        return self


class LMACMask(MaskMethod):
    """The trained L-MAC decoder ``psi`` (the ``psi`` module of the Brain).

    A decoder maps ``(feature_maps, num_frames)`` to mask logits
    ``[batch, num_frames, freq]``: ``lmac.models.cnn14.CNN14Decoder`` (the
    published one) or ``map_decoder.MapDecoder`` (any other family). The
    mask is their sigmoid; in training its gradient is at least
    ``gradient_floor`` (``floored_sigmoid``), so a saturated mask can reopen.
    """

    name = "lmac"
    title = "L-MAC"

    def __init__(self, decoder, gradient_floor=0.0):
        self.decoder = decoder
        self.gradient_floor = gradient_floor

    @classmethod
    def from_hparams(cls, hparams, modules):
        """Loads ``pretrained_interpreter``, or the run's best checkpoint, into the decoder ``modules["psi"]``."""
        load_lmac_decoder(hparams)
        return cls(modules["psi"])

    @classmethod
    def check_settings(cls, hparams):
        check_lmac_decoder(hparams, "evaluate")

    @classmethod
    def results_folder(cls, eval_folder):
        """The recipe's own method: the eval folder itself."""
        return eval_folder

    def mask(self, features, logits, feature_maps):
        return floored_sigmoid(self.decoder(feature_maps, features.log_mag.shape[1]), self.gradient_floor)


class _FlooredSigmoid(torch.autograd.Function):
    """``sigmoid``, whose backward uses ``max(sigmoid'(x), floor)``."""

    @staticmethod
    def forward(ctx, logits, floor):
        mask = torch.sigmoid(logits)
        ctx.save_for_backward(mask)
        ctx.floor = floor
        return mask

    @staticmethod
    def backward(ctx, grad_mask):
        (mask,) = ctx.saved_tensors
        return grad_mask * (mask * (1 - mask)).clamp_min(ctx.floor), None


def floored_sigmoid(logits, floor=0.0):
    """``sigmoid(logits)``, any shape; its gradient is ``max(sigmoid'(logits), floor)`` instead of ``sigmoid'``.

    A mask that saturates (logits far below 0: silence) has a vanishing
    ``sigmoid'``, so no loss term can open it again; the floor keeps a gradient
    there. The values are the sigmoid's; ``floor`` 0 is the plain sigmoid.

    Example
    -------
    >>> logits = torch.tensor([-30.0, 0.0], requires_grad=True)
    >>> floored_sigmoid(logits, 0.01).sum().backward()
    >>> logits.grad
    tensor([0.0100, 0.2500])
    """
    if not floor:
        return torch.sigmoid(logits)
    return _FlooredSigmoid.apply(logits, floor)


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


class CaptumMask(MaskMethod):
    """A gradient method: a captum attribution over the mel input, made a mask over the linear STFT.

    Arguments
    ---------
    classifier : torch.nn.Module
        Maps the classifier input ``[batch, frames, bins]`` to ``(logits, ...)`` (a ``FrozenClassifier``).
    classifier_input : torch.nn.Module
        The classifier's input (``features.LogMelInput``, ``features.LogMagnitudeInput``): its ``to_linear``
        puts an attribution over that input on the STFT grid.
    """

    forward_only = False
    class_conditional = True

    def __init__(self, classifier, classifier_input):
        self.classifier = classifier
        self.classifier_input = classifier_input

    @classmethod
    def from_hparams(cls, hparams, modules):
        return cls(modules["classifier"], modules["classifier_input"])

    def on_classifier(self, classifier):
        copied = copy.copy(self)
        copied.classifier = classifier
        return copied

    def logits(self, classifier_input):
        """The classifier's logits ``[batch, n_classes]`` alone, as captum expects."""
        return self.classifier(classifier_input)[0]

    @abc.abstractmethod
    def input_attribution(self, classifier_input, decision, features):
        """Attribution of ``decision`` ``[batch]`` over ``classifier_input`` ``[batch, frames, bins]``, same shape;
        ``features`` are the clips' ``SpectralFeatures``."""

    def mask(self, features, logits, feature_maps=None):
        return self.mask_for_classes(features, logits, feature_maps, logits.argmax(dim=1))

    def mask_for_classes(self, features, logits, feature_maps, classes):
        classifier_input = features.classifier_input.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            attribution = self.input_attribution(classifier_input, classes, features).detach()
        return attribution_mask(self.classifier_input.to_linear(attribution))


class SaliencyMask(CaptumMask):
    """``|d logit_c / d x|``."""

    name = "saliency"
    title = "Saliency"

    def input_attribution(self, classifier_input, decision, features):
        return Saliency(self.logits).attribute(classifier_input, target=decision, abs=True)


class SmoothGradMask(CaptumMask):
    """The saliency averaged over ``samples`` copies of the input with Gaussian noise (``noise`` times its range)."""

    name = "smoothgrad"
    title = "SmoothGrad"

    def __init__(self, classifier, classifier_input, samples=8, noise=0.15):
        super().__init__(classifier, classifier_input)
        self.samples = samples
        self.noise = noise

    @classmethod
    def from_hparams(cls, hparams, modules):
        return cls(
            modules["classifier"],
            modules["classifier_input"],
            hparams["smoothgrad_samples"],
            hparams["smoothgrad_noise"],
        )

    def input_attribution(self, classifier_input, decision, features):
        # captum takes the noise's std as a Python float; the input in units of its range (a tensor, never read
        # on the host) takes noise of std ``noise``, and the gradients are scaled back.
        spread = (classifier_input.max() - classifier_input.min()).clamp_min(1e-6)

        def logits_of_scaled(scaled_input):
            return self.logits(scaled_input * spread)

        attribution = NoiseTunnel(Saliency(logits_of_scaled)).attribute(
            classifier_input / spread,
            nt_type="smoothgrad",
            nt_samples=self.samples,
            nt_samples_batch_size=classifier_input.shape[0],
            stdevs=self.noise,
            target=decision,
            abs=True,
        )
        return attribution / spread


class IntegratedGradientsMask(CaptumMask):
    """Integrated gradients from the classifier input of silence (``L = 0``, in the clip's own normalisation for a
    mean-normalised input) in ``steps`` steps."""

    name = "integrated_gradients"
    title = "Integrated Gradients"

    def __init__(self, classifier, classifier_input, steps=32):
        super().__init__(classifier, classifier_input)
        self.steps = steps

    @classmethod
    def from_hparams(cls, hparams, modules):
        return cls(modules["classifier"], modules["classifier_input"], hparams["ig_steps"])

    def input_attribution(self, classifier_input, decision, features):
        silence = self.classifier_input(torch.zeros_like(features.log_mag), features.log_mag)  # [batch, frames, bins]
        return IntegratedGradients(self.logits).attribute(
            classifier_input,
            baselines=silence,
            target=decision,
            n_steps=self.steps,
            internal_batch_size=classifier_input.shape[0],
        )


class GradCAMMask(CaptumMask):
    """Grad-CAM on the output of ``layer`` (a dotted name inside ``classifier``), upsampled bilinearly."""

    name = "gradcam"
    title = "Grad-CAM"

    def __init__(self, classifier, classifier_input, layer="embedding_model.conv_block6"):
        super().__init__(classifier, classifier_input)
        self.layer_name = layer
        self.layer = named_submodule(classifier, layer, "gradcam_layer")

    def on_classifier(self, classifier):
        copied = super().on_classifier(classifier)
        copied.layer = named_submodule(classifier, self.layer_name, "gradcam_layer")
        return copied

    @classmethod
    def from_hparams(cls, hparams, modules):
        return cls(modules["classifier"], modules["classifier_input"], hparams["gradcam_layer"])

    def input_attribution(self, classifier_input, decision, features):
        cam = LayerGradCam(self.logits, self.layer).attribute(classifier_input, target=decision, relu_attributions=True)
        return cam_on_input_grid(cam, classifier_input.shape[1:])


def cam_on_input_grid(cam, input_shape):
    """A Grad-CAM map on the classifier input's grid ``[batch, frames, bins]``.

    A 2-D map ``[batch, 1, frames', bins']`` is upsampled bilinearly; a 1-D
    map over frames ``[batch, 1, frames']`` (ECAPA-TDNN's layers) linearly
    over time and repeated over every bin: it says when, not where in frequency.

    Example
    -------
    >>> cam_on_input_grid(torch.tensor([[[0.0, 2.0]]]), (4, 3))[0, :, 0]
    tensor([0.0000, 0.5000, 1.5000, 2.0000])
    """
    frames, bins = input_shape
    if cam.dim() == 3:
        over_time = F.interpolate(cam, size=frames, mode="linear")[:, 0]  # [batch, frames]
        return over_time[:, :, None].expand(-1, -1, bins)
    return LayerAttribution.interpolate(cam, (frames, bins), interpolate_mode="bilinear")[:, 0]


def fit_time(activations, steps):
    """``[batch, K, time]`` cropped or zero-padded to ``steps`` time steps."""
    missing = steps - activations.shape[2]
    if missing <= 0:
        return activations[:, :, :steps]
    return F.pad(activations, (0, missing))


def nmf_activations(psi, feature_maps, num_frames):
    """L2I's activations ``H`` ``[batch, K, num_frames]`` (non-negative) from CNN14 feature maps."""
    return psi(fit_feature_maps(feature_maps, num_frames))[:, :, :num_frames]


def component_relevance(theta, activations, decision):
    """``r_k = theta_ck * pool(H)_k``: each component's contribution to ``theta``'s score of ``c``.

    Arguments
    ---------
    theta : speechbrain.lobes.models.L2I.Theta
    activations : torch.Tensor
        ``[batch, K, frames]``.
    decision : torch.Tensor
        ``[batch]`` class indices.

    Returns
    -------
    torch.Tensor
        ``[batch, K]``.
    """
    pooled = theta.hard_att(fit_time(activations, theta.hard_att.in_features)).squeeze(2)  # [batch, K]
    return pooled * theta.classifier[0].weight[decision]


def relevant_reconstruction(dictionary, activations, relevance, threshold):
    """``X = sum_k W_k H_k`` over the components with ``r_k > 0`` and ``r_k >= threshold * max r``.

    Arguments
    ---------
    dictionary : torch.Tensor
        ``W``, ``[freq, K]``.
    activations : torch.Tensor
        ``H``, ``[batch, K, frames]``.
    relevance : torch.Tensor
        ``[batch, K]``.
    threshold : float

    Returns
    -------
    torch.Tensor
        ``[batch, frames, freq]``.

    Example
    -------
    >>> W = torch.eye(2)
    >>> H = torch.ones(1, 2, 3)
    >>> relevant_reconstruction(W, H, torch.tensor([[1.0, 0.2]]), 0.5)[0, 0]
    tensor([1., 0.])
    """
    top = relevance.amax(dim=1, keepdim=True)
    chosen = ((relevance > 0) & (relevance >= threshold * top)).to(activations.dtype)  # [batch, K]
    return torch.einsum("fk,bkt->btf", dictionary, activations * chosen[:, :, None])


def reconstruction_mask(relevant, full):
    """``X_rel / X_all`` (0 where ``X_all`` is 0), ``[batch, frames, freq]``: L2I's interpretation as a mask.

    The share of each cell's NMF reconstruction that the relevant components
    explain, a soft (Wiener-like) mask in ``[0, 1]``.

    Example
    -------
    >>> reconstruction_mask(torch.tensor([[[1.0, 3.0, 1.0]]]), torch.tensor([[[2.0, 3.0, 0.0]]]))
    tensor([[[0.5000, 1.0000, 0.0000]]])
    """
    ratio = relevant / full.clamp_min(torch.finfo(full.dtype).tiny)
    return torch.where(full > 0, ratio.clamp(0, 1), torch.zeros_like(ratio))


class L2IMask(MaskMethod):
    """L2I's interpretation of the decision as a mask: ``X_rel / X_all``.

    Arguments
    ---------
    psi : speechbrain.lobes.models.L2I.CNN14PSI_stft
    theta : speechbrain.lobes.models.L2I.Theta
    nmf_decoder : speechbrain.lobes.models.L2I.NMFDecoderAudio
        Holds the dictionary.
    relevance_threshold : float
    """

    name = "l2i"
    title = "L2I"
    class_conditional = True

    def __init__(self, psi, theta, nmf_decoder, relevance_threshold):
        self.psi = psi
        self.theta = theta
        self.nmf_decoder = nmf_decoder
        self.relevance_threshold = relevance_threshold

    @classmethod
    def from_hparams(cls, hparams, modules):
        """The NMF dictionary and best checkpoint of the L2I run in ``l2i_folder``, in eval mode (they follow
        the input's device)."""
        l2i = load_l2i_run(hparams["l2i_folder"], hparams)
        l2i["checkpointer"].recover_if_possible(min_key=BEST_CHECKPOINT_KEY)
        psi, theta, decoder = (
            set_weight_layout(l2i[name].eval(), forward_only=True) for name in ("psi", "theta", "nmf_decoder")
        )
        return cls(psi, theta, decoder, l2i["relevance_th"])

    @classmethod
    def applies_to(cls, hparams):
        """CNN14 only: L2I's decoder reads CNN14's feature maps."""
        return hparams["family"]["supports_l2i"]

    @classmethod
    def check_settings(cls, hparams):
        check_l2i_family(hparams)
        check_l2i_folder(hparams["l2i_folder"])

    def mask(self, features, logits, feature_maps):
        return self.mask_for_classes(features, logits, feature_maps, logits.argmax(dim=1))

    def mask_for_classes(self, features, logits, feature_maps, classes):
        for module in (self.psi, self.theta, self.nmf_decoder):
            module.to(features.log_mag.device)  # a no-op once there
        activations = nmf_activations(self.psi, feature_maps, features.log_mag.shape[1])
        return self.mask_of(activations, classes)

    def mask_of(self, activations, decision):
        """The mask ``[batch, frames, freq]`` for activations ``[batch, K, frames]`` and decisions ``[batch]``."""
        dictionary = self.nmf_decoder.return_W()
        relevance = component_relevance(self.theta, activations, decision)
        relevant = relevant_reconstruction(dictionary, activations, relevance, self.relevance_threshold)
        full = torch.einsum("fk,bkt->btf", dictionary, activations)
        return reconstruction_mask(relevant, full)


class ConstantMask(MaskMethod):
    """A mask of one value everywhere: a reference row of a comparison."""

    value = None

    @classmethod
    def from_hparams(cls, hparams, modules):
        return cls()

    def mask(self, features, logits, feature_maps):
        return torch.full_like(features.log_mag, self.value)


class EmptyMask(ConstantMask):
    """``M = 0``: what the classifier says when the mask removes everything (the reference ``R`` alone)."""

    name = "empty_mask"
    title = "Empty mask"
    value = 0.0


class AllOnesMask(ConstantMask):
    """``M = 1``: the whole input kept."""

    name = "all_ones_mask"
    title = "All-ones mask"
    value = 1.0


# The registry of ``--int_method`` and ``--compare``: one line per method.
MASK_METHODS = {
    LMACMask.name: LMACMask,
    SaliencyMask.name: SaliencyMask,
    SmoothGradMask.name: SmoothGradMask,
    IntegratedGradientsMask.name: IntegratedGradientsMask,
    GradCAMMask.name: GradCAMMask,
    L2IMask.name: L2IMask,
    EmptyMask.name: EmptyMask,
    AllOnesMask.name: AllOnesMask,
}
