#!/usr/bin/env python3
"""Trains an L2I (Listen to Interpret) interpreter: the NMF-based baseline L-MAC is compared with.

    python train_nmf.py hparams/lmac_cnn14.yaml --data_folder /data/ESC50
    python train_l2i.py hparams/lmac_cnn14.yaml --data_folder /data/ESC50

L2I (Parekh et al., NeurIPS 2022) explains a classifier with a dictionary
``W`` ``[freq, K]`` of NMF spectral components (``train_nmf.py``, frozen
here). A decoder ``psi`` (SpeechBrain's ``L2I.CNN14PSI_stft``) maps the
classifier's feature maps to activations ``H`` ``[K, frames]`` and a linear
classifier ``theta`` (``L2I.Theta``, attention pooling over time then a
linear layer) must reproduce the classifier's decision from ``H``:

    loss = CE(theta(H), c) + l2i_rec_w * mean((W H - L)^2) + l2i_l1_w * mean(H)

with ``L = log1p|STFT|`` and ``c`` the classifier's decision. The
interpretation of ``c`` keeps the components whose relevance
``r_k = theta_ck * pool(H)_k`` is positive and at least
``l2i_relevance_th`` times the largest: ``X_rel = sum_k W_k H_k`` over them.
As a mask over the STFT (for the metrics and the listenable output, as for
L-MAC) it is the share of the whole reconstruction ``X_all = W H`` that they
explain: ``M = X_rel / X_all``.

The run lives under ``l2i_folder`` (``<output_folder>/l2i``) of the same
configuration as L-MAC, so ``eval.py --compare ...,l2i`` finds it.
"""

import dataclasses
import logging
import os
import sys

import speechbrain as sb
import torch
import torch.nn.functional as F
from hyperpyyaml import load_hyperpyyaml

from cnn14_family import fit_feature_maps
from esc50_prepare import prepare_datasets
from interpreter_brain import BEST_CHECKPOINT_KEY, FEATURE_MODULES, end_distributed_run, set_weight_layout
from train_lmac import LMAC, LMACOutput, check_class_count, load_classifier, validate_hparams
from wham_prepare import make_noise_stream

logger = logging.getLogger(__name__)


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


def _unwrapped(module):
    """The module inside a ``DistributedDataParallel`` wrapper, or ``module`` itself."""
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


class L2IMask:
    """L2I's interpretation as a mask method of ``LMAC`` (``eval.py``): ``mask(features, logits, feature_maps)``.

    Arguments
    ---------
    psi : L2I.CNN14PSI_stft
    theta : L2I.Theta
    nmf_decoder : L2I.NMFDecoderAudio
        Holds the dictionary.
    relevance_threshold : float
    """

    name = "l2i"

    def __init__(self, psi, theta, nmf_decoder, relevance_threshold):
        self.psi = psi
        self.theta = theta
        self.nmf_decoder = nmf_decoder
        self.relevance_threshold = relevance_threshold

    def __call__(self, features, logits, feature_maps):
        """The mask ``[batch, frames, freq]`` of the classifier's decision."""
        activations = nmf_activations(self.psi, feature_maps, features.log_mag.shape[1])
        return self.mask_of(activations, logits.argmax(dim=1))

    def mask_of(self, activations, decision):
        """The mask ``[batch, frames, freq]`` for activations ``[batch, K, frames]`` and decisions ``[batch]``."""
        dictionary = self.nmf_decoder.return_W()
        relevance = component_relevance(self.theta, activations, decision)
        relevant = relevant_reconstruction(dictionary, activations, relevance, self.relevance_threshold)
        full = torch.einsum("fk,bkt->btf", dictionary, activations)
        return reconstruction_mask(relevant, full)


@dataclasses.dataclass
class L2IOutput(LMACOutput):
    """``LMACOutput`` plus L2I's activations ``[batch, K, frames]`` and ``theta``'s probabilities."""

    activations: torch.Tensor
    theta_probabilities: torch.Tensor


class L2I(LMAC):
    """Trains ``psi`` and ``theta`` of L2I on a frozen classifier and NMF dictionary.

    Modules: ``psi``, ``theta``, ``nmf_decoder`` (frozen) and ``classifier``.
    The VALID and TEST stages record the metrics of L-MAC on L2I's masks.
    """

    def compute_forward(self, batch, stage):
        """Activations and ``theta``'s answer; outside TRAIN also the mask and masked classifications."""
        wavs, clean, features, logits, feature_maps = self.classify_batch(batch)
        activations = nmf_activations(self.modules.psi, feature_maps, features.log_mag.shape[1])
        probabilities = self.modules.theta(fit_time(activations, self.hparams.num_frames))
        if stage == sb.Stage.TRAIN:
            base = LMACOutput(wavs, clean, features, logits, None, None, None, None)
        else:
            mask = self.l2i_mask().mask_of(activations, logits.argmax(dim=1))
            base = self.masked_output(wavs, clean, features, logits, mask)
        return L2IOutput(**vars(base), activations=activations, theta_probabilities=probabilities)

    def l2i_mask(self):
        """The ``L2IMask`` of the brain's current modules (unwrapped from DDP)."""
        psi, theta, decoder = (_unwrapped(getattr(self.modules, name)) for name in ("psi", "theta", "nmf_decoder"))
        return L2IMask(psi, theta, decoder, self.hparams.l2i_relevance_th)

    def compute_mask(self, features, logits, feature_maps):
        """L2I's mask ``[batch, frames, freq]`` (used by ``eval.FileInterpreter``)."""
        return self.l2i_mask()(features, logits, feature_maps)

    def compute_objectives(self, output, batch, stage):
        """L2I's loss; in VALID and TEST also the interpretation metrics of its masks."""
        decision = output.logits.argmax(dim=1)
        fidelity = F.nll_loss(torch.log(output.theta_probabilities.clamp_min(1e-8)), decision)
        reconstruction = self.modules.nmf_decoder(output.activations).transpose(1, 2)  # [batch, frames, freq]
        rec = (reconstruction - output.features.log_mag[:, : reconstruction.shape[1]]).pow(2).mean()
        loss = fidelity + self.hparams.l2i_rec_w * rec + self.hparams.l2i_l1_w * output.activations.mean()
        if stage != sb.Stage.TRAIN:
            self.record_stage_outputs(output, batch, stage, keep=None)
        return loss


def l2i_hparams(hparams):
    """The configuration with L2I's epoch counter, annealing, logger and output folders in L-MAC's places."""
    return {
        **hparams,
        "epoch_counter": hparams["l2i_epoch_counter"],
        "lr_annealing": hparams["l2i_lr_annealing"],
        "train_logger": hparams["l2i_train_logger"],
        "interpretations_folder": os.path.join(hparams["l2i_folder"], "interpretations"),
        "finetuning": False,
    }


def l2i_modules(hparams):
    """The modules of an L2I brain, with the NMF dictionary loaded from ``nmf_dictionary`` and frozen."""
    path = hparams["nmf_dictionary"]
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"nmf_dictionary={path!r} does not exist; run `python train_nmf.py <hparams> ...` with the same "
            "--output_folder first, or pass --nmf_dictionary."
        )
    state = torch.load(path, map_location="cpu")
    components = state["W"].shape[1]
    if components != hparams["nmf_components"]:
        raise ValueError(
            f"nmf_dictionary={path!r} has {components} components, but nmf_components={hparams['nmf_components']}; "
            f"pass --nmf_components {components}."
        )
    decoder = hparams["nmf_decoder"]
    decoder.load_state_dict(state)
    decoder.requires_grad_(False)
    return {
        "psi": hparams["l2i_psi"],
        "theta": hparams["l2i_theta"],
        "nmf_decoder": decoder,
        **{name: hparams["modules"][name] for name in FEATURE_MODULES},
        "classifier": hparams["modules"]["classifier"],
    }


def make_l2i_brain(hparams, run_opts, noise_stream=None):
    """An ``L2I`` brain over the configuration's L2I modules and checkpointer."""
    return L2I(
        modules=l2i_modules(hparams),
        opt_class=hparams["l2i_opt_class"],
        hparams=l2i_hparams(hparams),
        run_opts=run_opts,
        checkpointer=hparams["l2i_checkpointer"],
        noise_stream=noise_stream,
    )


def main(argv):
    """Trains L2I and tests its best checkpoint; returns the brain (``last_stage_stats`` of TEST)."""
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as file:
        hparams = load_hyperpyyaml(file, overrides)
    validate_hparams(hparams)
    noise_stream = make_noise_stream(hparams)
    sb.create_experiment_directory(
        experiment_directory=hparams["l2i_folder"], hyperparams_to_save=hparams_file, overrides=overrides
    )
    datasets, label_encoder = prepare_datasets(hparams)
    check_class_count(hparams, label_encoder)
    load_classifier(hparams)
    brain = make_l2i_brain(hparams, run_opts, noise_stream)
    brain.fit(
        brain.hparams.epoch_counter,
        train_set=datasets["train"],
        valid_set=datasets["valid"],
        train_loader_kwargs=hparams["train_dataloader_options"],
        valid_loader_kwargs=hparams["test_dataloader_options"],
    )
    set_weight_layout(brain.modules, forward_only=True)
    brain.evaluate(datasets["test"], min_key=BEST_CHECKPOINT_KEY, test_loader_kwargs=hparams["test_dataloader_options"])
    end_distributed_run()
    return brain


if __name__ == "__main__":
    main(sys.argv[1:])
