"""The L-MAC Brain and its objective: masked-in and masked-out cross-entropies, the sparsity terms, the
beyond-empty term and gate, the adaptive L1 weight and the fine-tuning guidance (``docs/method.md``).
"""

import logging

import speechbrain as sb
import torch
import torch.nn.functional as F

from lmac.features import stft_phase
from lmac.masking import crop_frames, masked_log_magnitudes
from lmac.methods import LMACMask
from lmac.metrics import ENERGY_SCOPES, clean_energy_region, clean_energy_share, decision_log_probability
from lmac.training.brain import INTERPRETER_RUN_SETTINGS, InterpreterBrain

logger = logging.getLogger(__name__)


CROSSCOR_TYPES = ("conv", "dotp")


GUIDELOSS_TYPES = ("binary", "reconstruction")

# The settings that define what an L-MAC run learns (lmac.checks.check_resumes_the_same_run).
LMAC_RUN_SETTINGS = INTERPRETER_RUN_SETTINGS + (
    "l_in_w",
    "l_out_w",
    "masked_out_loss",
    "reg_w_l1",
    "reg_w_tv",
    "l1_rate",
    "l1_ce_target",
    "l_contrast_w",
    "l_empty_w",
    "l_energy_w",
    "energy_scope",
    "sparsity_gate",
    "mask_gradient_floor",
    "finetuning",
    "pretrained_interpreter",
    "crosscortype",
    "guidelosstype",
    "crosscor_th",
    "bin_th",
    "g_w",
)


def crosscor(spectrogram, template, kind):
    """Per-example normalised cross-correlation of two spectrograms at zero lag.

    ``dotp``: ``mean(a * b) / (rms(a) * rms(b))``, the uncentred cosine
    similarity. ``conv``: both zero-meaned per example, then a grouped 2-D
    convolution of the spectrogram with the same-size template, divided by
    ``sqrt(sum a^2 * sum b^2)``: a Pearson correlation.

    Arguments
    ---------
    spectrogram, template : torch.Tensor
        ``[batch, frames, freq]``, same shape.
    kind : str
        ``conv`` or ``dotp``.

    Returns
    -------
    torch.Tensor
        ``[batch]``, in ``[-1, 1]``; 0 where either input is constant zero.

    Example
    -------
    >>> x = torch.rand(2, 5, 4)
    >>> torch.allclose(crosscor(x, 3 * x, "conv"), torch.ones(2)), torch.allclose(crosscor(x, x, "dotp"), torch.ones(2))
    (True, True)
    """
    if kind not in CROSSCOR_TYPES:
        raise ValueError(f"crosscortype={kind!r}; accepted values are {CROSSCOR_TYPES}.")
    if spectrogram.shape != template.shape or spectrogram.dim() != 3:
        raise ValueError(
            f"crosscor needs two [batch, frames, freq] tensors of one shape; got "
            f"{tuple(spectrogram.shape)} and {tuple(template.shape)}."
        )
    tiny = torch.finfo(spectrogram.dtype).tiny
    if kind == "dotp":
        rms_product = spectrogram.pow(2).mean(dim=(1, 2)).sqrt() * template.pow(2).mean(dim=(1, 2)).sqrt()
        return (spectrogram * template).mean(dim=(1, 2)) / rms_product.clamp_min(tiny)
    centred = spectrogram - spectrogram.mean(dim=(1, 2), keepdim=True)
    centred_template = template - template.mean(dim=(1, 2), keepdim=True)
    batch = spectrogram.shape[0]
    correlation = F.conv2d(centred.unsqueeze(0), centred_template.unsqueeze(1), groups=batch).flatten()  # [batch]
    energy = centred.pow(2).sum(dim=(1, 2)) * centred_template.pow(2).sum(dim=(1, 2))
    return correlation / energy.sqrt().clamp_min(tiny)


def tv_loss(mask):
    """Per-example total variation of a mask, halved as in ``docs/method.md`` (Training objective).

    ``TV_b / 2`` with ``TV_b = sum (M[:, 1:] - M[:, :-1])^2 + sum (M[1:, :] - M[:-1, :])^2``.

    Arguments
    ---------
    mask : torch.Tensor
        ``[batch, frames, freq]``.

    Returns
    -------
    torch.Tensor
        ``[batch]``.

    Example
    -------
    >>> tv_loss(torch.tensor([[[0.0, 1.0], [0.0, 1.0]]]))
    tensor([1.])
    """
    along_freq = (mask[:, :, 1:] - mask[:, :, :-1]).pow(2).sum(dim=(1, 2))
    along_time = (mask[:, 1:, :] - mask[:, :-1, :]).pow(2).sum(dim=(1, 2))
    return (along_freq + along_time) / 2


def guidance_per_example(mask, masked_in, clean_log_mag, kind, bin_th):
    """Per-example fine-tuning guidance before ``keep`` and ``g_w`` weigh it.

    ``binary``: ``BCE(M, Lc >= bin_th * max Lc)``; ``reconstruction``:
    ``mean((M * L - Lc)^2)``.

    Arguments
    ---------
    mask, masked_in, clean_log_mag : torch.Tensor
        ``[batch, frames', freq]``: the mask, ``M * L`` and the clean ``Lc``.
    kind : str
        ``binary`` or ``reconstruction``.
    bin_th : float

    Returns
    -------
    torch.Tensor
        ``[batch]``.
    """
    if kind == "binary":
        target = clean_energy_region(clean_log_mag, bin_th).float()
        return F.binary_cross_entropy(mask, target, reduction="none").mean(dim=(1, 2))
    if kind == "reconstruction":
        return (masked_in - clean_log_mag).pow(2).mean(dim=(1, 2))
    raise ValueError(f"guidelosstype={kind!r}; accepted values are {GUIDELOSS_TYPES}.")


def contrastive_loss(logits, decision):
    """Per-example ``softplus(max_{k != c} z_k - z_c)``: small when logit ``c`` beats every other class.

    Arguments
    ---------
    logits : torch.Tensor
        ``[batch, n_classes]``.
    decision : torch.Tensor
        ``[batch]`` class indices ``c``.

    Returns
    -------
    torch.Tensor
        ``[batch]``.

    Example
    -------
    >>> contrastive_loss(torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 3.0]]), torch.tensor([0, 0]))  # margins 1 and -3
    tensor([0.3133, 3.0486])
    """
    own = logits.gather(1, decision[:, None]).squeeze(1)
    others = logits.scatter(1, decision[:, None], float("-inf"))
    return F.softplus(others.amax(dim=1) - own)


def negative_cross_entropy(logits, decision):
    """Per-example ``-CE(z, c) = log q_c``, the published masked-out term: it rewards a masked-out input that
    gives ``c`` ever less probability, without end (its gradient on ``z_c`` tends to 1, not 0, as ``q_c -> 0``).

    Arguments
    ---------
    logits : torch.Tensor
        ``[batch, n_classes]``.
    decision : torch.Tensor
        ``[batch]`` class indices ``c``.

    Returns
    -------
    torch.Tensor
        ``[batch]``, at most 0.

    Example
    -------
    >>> round(negative_cross_entropy(torch.log(torch.tensor([[0.25, 0.75]])), torch.tensor([0])).item(), 4)  # log 0.25
    -1.3863
    """
    return decision_log_probability(logits, decision)


def not_decision_loss(logits, decision):
    """Per-example ``-log(1 - q_c)``: small once the masked-out input no longer gives the decision ``c``.

    Unlike ``negative_cross_entropy`` it ends: at least 0, and its gradient on
    ``z_c`` is ``q_c``, which vanishes once ``c`` has lost its probability,
    so it does not keep rewarding a mask for destroying more of the input
    than the decision needs. Computed as ``-logsumexp_{k != c} log q_k``.

    Arguments
    ---------
    logits : torch.Tensor
        ``[batch, n_classes]``.
    decision : torch.Tensor
        ``[batch]`` class indices ``c``.

    Returns
    -------
    torch.Tensor
        ``[batch]``, at least 0.

    Example
    -------
    >>> round(not_decision_loss(torch.log(torch.tensor([[0.25, 0.75]])), torch.tensor([0])).item(), 4)  # -log 0.75
    0.2877
    """
    log_probabilities = torch.log_softmax(logits.float(), dim=1)
    others = log_probabilities.scatter(1, decision[:, None], float("-inf"))
    return -torch.logsumexp(others, dim=1)


# The masked-out term (``masked_out_loss``): per-example loss of the masked-out logits, weighed by ``l_out_w``.
MASKED_OUT_LOSSES = {"negative_cross_entropy": negative_cross_entropy, "not_decision": not_decision_loss}


def masked_out_loss(kind, logits, decision):
    """The masked-out term of ``MASKED_OUT_LOSSES[kind]``, ``[batch, n_classes]`` logits to ``[batch]``."""
    if kind not in MASKED_OUT_LOSSES:
        raise ValueError(f"masked_out_loss={kind!r}; accepted values are {sorted(MASKED_OUT_LOSSES)}.")
    return MASKED_OUT_LOSSES[kind](logits, decision)


def beyond_empty_loss(logits_masked_in, logits_empty, decision):
    """Per-example ``softplus(log q_empty_c - log q_in_c)``: small when the masked-in input gives the decision
    ``c`` a higher probability than the empty mask's input does (log 2 when they are equal).

    Arguments
    ---------
    logits_masked_in, logits_empty : torch.Tensor
        ``[batch, n_classes]``.
    decision : torch.Tensor
        ``[batch]`` class indices ``c``.

    Returns
    -------
    torch.Tensor
        ``[batch]``.

    Example
    -------
    >>> same = torch.tensor([[1.0, 0.0]])
    >>> round(beyond_empty_loss(same, same, torch.tensor([0])).item(), 4)  # log 2
    0.6931
    """
    gap = decision_log_probability(logits_empty, decision) - decision_log_probability(logits_masked_in, decision)
    return F.softplus(gap)


def beyond_empty_gate(logits_masked_in, logits_empty, decision):
    """Per-example ``clamp(q_in_c - q_empty_c, 0, 1)``, detached: what the masked-in input adds to the decision's
    probability over the empty mask's input. It weighs each clip's sparsity term (``sparsity_gate``).

    Arguments
    ---------
    logits_masked_in, logits_empty : torch.Tensor
        ``[batch, n_classes]``.
    decision : torch.Tensor
        ``[batch]`` class indices ``c``.

    Returns
    -------
    torch.Tensor
        ``[batch]``, in ``[0, 1]``.

    Example
    -------
    >>> beyond_empty_gate(torch.log(torch.tensor([[0.9, 0.1], [0.3, 0.7]])), torch.zeros(2, 2), torch.tensor([0, 0]))
    tensor([0.4000, 0.0000])
    """
    q_in, q_empty = (
        decision_log_probability(logits.detach(), decision).exp() for logits in (logits_masked_in, logits_empty)
    )
    return (q_in - q_empty).clamp(0, 1)


class AdaptiveWeight(torch.nn.Module):
    """A loss weight that dual ascent adapts so that a constrained quantity stays at its target.

    After each training step ``w <- clamp(w * exp(rate * (target - quantity)), low, high)``:
    the weight grows while the quantity is under its target and shrinks
    while it is over. With ``rate`` 0 it stays ``initial`` (a fixed weight).
    Under DDP the quantity is first averaged over the processes, so every
    process holds the same weight (the one rank 0 saves).
    For L-MAC's sparsity: the L1 weight, constrained by the masked-in
    cross-entropy, so the masks get as sparse as the decision allows
    instead of as sparse as one data set's weight makes them.

    Arguments
    ---------
    initial, target, rate : float
    low, high : float
        Bounds of the weight.

    Example
    -------
    >>> weight = AdaptiveWeight(1.0, target=0.5, rate=2.0)
    >>> weight.update(torch.tensor(1.5)); round(float(weight.value), 4)  # over the target: the weight shrinks
    0.1353
    """

    def __init__(self, initial, target, rate, low=1e-3, high=1e3):
        super().__init__()
        self.target, self.rate, self.low, self.high = target, rate, low, high
        self.register_buffer("value", torch.tensor(float(initial)))

    @torch.no_grad()
    def update(self, quantity):
        """One dual-ascent step from the batch's ``quantity`` (a 0-d tensor; no host read), averaged over DDP's processes."""
        if not self.rate:
            return
        quantity = quantity.detach().float().clone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(quantity)
            quantity /= torch.distributed.get_world_size()
        self.value.mul_(torch.exp(self.rate * (self.target - quantity))).clamp_(self.low, self.high)


class LMAC(InterpreterBrain):
    """L-MAC: a decoder ``psi`` maps classifier feature maps to a mask over the linear STFT.

    Arguments
    ---------
    *args, **kwargs
        As for ``InterpreterBrain``: with no ``mask_method`` the mask is the
        decoder's (``lmac.methods.LMACMask``), the one L-MAC trains.
    """

    def compute_forward(self, batch, stage):
        """Classifier, mask, and the masked-in and masked-out classifications: a ``MaskedOutput``."""
        mixed, features, logits, feature_maps = self.classify_batch(batch)
        mask = self.compute_mask(features, logits, feature_maps)
        return self.masked_output(mixed, features, logits, mask, stage, feature_maps)

    def own_mask_method(self):
        """The decoder of this Brain's modules (wrapped for DDP when training is distributed)."""
        return LMACMask(self.modules.psi, self.hparams.mask_gradient_floor)

    @torch.no_grad()
    def interpret_computation_steps(self, wavs):
        """The steps of an interpretation, as SpeechBrain's L-MAC recipe returns them.

        The modules run as they are (``brain.modules.eval()`` for
        inference), under SpeechBrain's ``eval_precision``; no noise is added.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]``.

        Returns
        -------
        interpretation : torch.Tensor
            ``M * L``, the ``log1p`` magnitude of the interpretation, ``[batch, freq, frames']``
            (frequency-major, as upstream).
        mask : torch.Tensor
            ``M``, ``[batch, freq, frames']``.
        phase : torch.Tensor
            The input's STFT phase, ``[batch, frames, freq]`` (time-major, as upstream).
        log_mag : torch.Tensor
            ``L = log1p|STFT|`` of the input, ``[batch, frames, freq]``.
        """
        with self.evaluation_ctx:
            features = self.compute_features(wavs.to(self.device))
            logits, feature_maps = self.classify(features.classifier_input)
            mask = self.compute_mask(features, logits, feature_maps)
        masked_in, _ = masked_log_magnitudes(mask, features.log_mag)
        return masked_in.transpose(1, 2), mask.transpose(1, 2), stft_phase(features.stft), features.log_mag

    def crosscor(self, spectrogram, template):
        """``crosscor`` of two ``[batch, frames, freq]`` spectrograms with the configured ``crosscortype``: ``[batch]``."""
        return crosscor(spectrogram, template, self.hparams.crosscortype)

    def compute_objectives(self, output, batch, stage):
        """The L-MAC loss; in VALID and TEST also records every metric and saves interpretations."""
        decision = output.logits.argmax(dim=1)
        loss_in = F.cross_entropy(output.logits_masked_in, decision)
        loss_out = masked_out_loss(self.hparams.masked_out_loss, output.logits_masked_out, decision).mean()
        l1_weight = self.l1_weight_in_force(stage)
        noisy = output.clean_wavs is not output.wavs
        needs_clean = self.hparams.finetuning or (noisy and stage != sb.Stage.TRAIN)
        clean = crop_frames(self.clean_log_magnitude(output), output.mask.shape[1]) if needs_clean else None
        keep, guidance = self.guidance(output, clean)
        regulariser_weight = 1.0 - keep
        if self.hparams.sparsity_gate:
            regulariser_weight = regulariser_weight * beyond_empty_gate(
                output.logits_masked_in, output.logits_empty, decision
            )
        loss = (
            self.hparams.l_in_w * loss_in
            + self.hparams.l_out_w * loss_out
            + l1_weight * (regulariser_weight * output.mask.abs().mean(dim=(1, 2))).mean()
            + self.hparams.g_w * guidance
        )
        if self.hparams.l_contrast_w:  # 0 by default (the published objective)
            loss = loss + self.hparams.l_contrast_w * contrastive_loss(output.logits_masked_in, decision).mean()
        if self.hparams.l_empty_w:  # 0 by default (the published objective)
            beyond = beyond_empty_loss(output.logits_masked_in, output.logits_empty, decision)
            loss = loss + self.hparams.l_empty_w * beyond.mean()
        if self.hparams.l_energy_w:  # 0 in the published objective
            played = ENERGY_SCOPES[self.hparams.energy_scope](output.mask, output.features.log_mag)
            loss = loss + self.hparams.l_energy_w * (regulariser_weight * played).mean()
        if self.hparams.reg_w_tv:  # 0 by default: then neither TV nor its backward is computed
            loss = loss + self.hparams.reg_w_tv * (regulariser_weight * tv_loss(output.mask)).mean()
        if stage == sb.Stage.TRAIN:
            self.hparams.l1_weight.update(loss_in)  # after its use: the next step's weight
        if stage != sb.Stage.TRAIN:
            extra = {"in_masks": keep} if self.hparams.finetuning else {}
            if noisy:
                extra["clean_energy_share"] = clean_energy_share(
                    output.mask.detach().float(), clean, self.hparams.bin_th
                )
            self.record_stage_outputs(output, batch, stage, extra)
        return loss

    def l1_weight_in_force(self, stage):
        """The L1 weight of a step: in TRAIN the adaptive weight's value before this step's update (a copy, so the
        update cannot change what backward reads); in VALID and TEST the fixed ``reg_w_l1``, so that the validation
        loss, the best checkpoint's key, measures every epoch with one objective."""
        if stage == sb.Stage.TRAIN:
            return self.hparams.l1_weight.value.clone()
        return self.hparams.reg_w_l1

    def needs_empty_logits(self, stage):
        """VALID and TEST, and training too when the beyond-empty term (``l_empty_w``) or gate (``sparsity_gate``)
        reads them."""
        return bool(self.hparams.l_empty_w or self.hparams.sparsity_gate) or super().needs_empty_logits(stage)

    def on_fit_start(self):
        """SpeechBrain's start of ``fit``, with the adaptive L1 weight on the device (before its checkpoint is loaded)."""
        self.hparams.l1_weight.to(self.device)
        super().on_fit_start()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """``InterpreterBrain``'s, with the L1 weight in force logged in VALID (``l1_weight``)."""
        if stage == sb.Stage.VALID:
            self.record_stage_value("l1_weight", self.hparams.l1_weight.value)
        super().on_stage_end(stage, stage_loss, epoch)

    def guidance(self, output, clean):
        """``keep`` (``[batch]``, 1 where the guidance applies) and the guidance loss (scalar).

        ``clean`` is the clean input's ``log1p|STFT|`` over the mask's frames.
        The guidance reads the interpretation ``M * L`` (``docs/method.md``,
        Fine-tuning guidance), not the classifier's masked-in input
        ``M * L + (1 - M) * R``: with a reference ``R`` an empty mask would
        correlate with every clean clip. Without fine-tuning no sample is
        kept and the guidance is 0.
        """
        if not self.hparams.finetuning:
            zeros = torch.zeros(output.mask.shape[0], device=output.mask.device)
            return zeros, zeros.sum()
        masked_in, _ = masked_log_magnitudes(output.mask, output.features.log_mag)
        keep = (crosscor(clean, masked_in, self.hparams.crosscortype) >= self.hparams.crosscor_th).float()
        per_example = guidance_per_example(
            output.mask, masked_in, clean, self.hparams.guidelosstype, self.hparams.bin_th
        )
        return keep, (keep * per_example).mean()

    def clean_log_magnitude(self, output):
        """``log1p|STFT|`` of the clean input ``[batch, frames, freq]``; computed only when noise was added."""
        if output.clean_wavs is output.wavs:
            return output.features.log_mag
        return self.compute_features(output.clean_wavs).log_mag
