#!/usr/bin/env python3
"""Trains an L2I (Listen to Interpret) interpreter: the NMF-based baseline L-MAC is compared with.

    python train_nmf.py hparams/l2i_cnn14.yaml --data_folder /data/ESC50
    python train_l2i.py hparams/l2i_cnn14.yaml --data_folder /data/ESC50

L2I (Parekh et al., NeurIPS 2022) explains a classifier with a dictionary
``W`` ``[freq, K]`` of NMF spectral components (``train_nmf.py``, frozen
here). A decoder ``psi`` (SpeechBrain's ``L2I.CNN14PSI_stft``) maps the
classifier's feature maps to activations ``H`` ``[K, frames]`` and a linear
classifier ``theta`` (``L2I.Theta``, attention pooling over time then a
linear layer) must reproduce the classifier's decision from ``H``:

    loss = CE(theta(H), c) + rec_w * mean((W H - L)^2) + l1_w * mean(H)

with ``L = log1p|STFT|`` and ``c`` the classifier's decision. The
interpretation of ``c`` keeps the components whose relevance
``r_k = theta_ck * pool(H)_k`` is positive and at least
``relevance_th`` times the largest: ``X_rel = sum_k W_k H_k`` over them.
As a mask over the STFT (for the metrics and the listenable output, as for
L-MAC) it is the share of the whole reconstruction ``X_all = W H`` that they
explain: ``M = X_rel / X_all``.

Its run folder is what ``eval.py hparams/lmac_cnn14.yaml --compare ...,l2i``
reads as ``--l2i_folder``, with the same classifier.
"""

import dataclasses
import logging
import sys

import speechbrain as sb
import torch
import torch.nn.functional as F

from checkpointing import BEST_CHECKPOINT_KEY
from classifier_families import check_l2i_family
from device_runtime import end_distributed_run, set_weight_layout
from esc50_prepare import prepare_datasets
from features import SpectralFeatures
from interpreter_brain import InterpreterBrain, MaskedOutput
from lmac_interpreter import class_names_from_encoder
from mask_methods import L2IMask, fit_time, nmf_activations
from recipe_setup import (
    add_tensorboard_logger,
    build_mask_reference,
    load_classifier,
    load_nmf_dictionary,
    log_empty_mask_decision,
    named_class_count,
    note_class_count,
    run_script,
    start_recipe,
    validate_data_hparams,
)
from wham_prepare import make_noise_stream

logger = logging.getLogger(__name__)


def _unwrapped(module):
    """The module inside a ``DistributedDataParallel`` wrapper, or ``module`` itself."""
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


@dataclasses.dataclass
class L2IOutput:
    """What ``L2I.compute_forward`` computes once per batch.

    ``features`` and ``logits`` ``[batch, n_classes]`` of the interpreted
    input, the activations ``H`` ``[batch, K, frames]`` and ``theta``'s
    probabilities ``[batch, n_classes]``; outside TRAIN also ``masked``,
    the ``MaskedOutput`` of L2I's mask (None in TRAIN, where nothing reads it).
    """

    features: SpectralFeatures
    logits: torch.Tensor
    activations: torch.Tensor
    theta_probabilities: torch.Tensor
    masked: MaskedOutput | None


class L2I(InterpreterBrain):
    """Trains ``psi`` and ``theta`` of L2I on a frozen classifier and NMF dictionary.

    Modules: ``psi``, ``theta``, ``nmf_decoder`` (frozen), ``classifier`` and
    the feature modules. The VALID and TEST stages record the metrics of
    L-MAC on L2I's masks.
    """

    def compute_forward(self, batch, stage):
        """Activations and ``theta``'s answer; outside TRAIN also the mask and masked classifications."""
        wavs, clean, features, logits, feature_maps = self.classify_batch(batch)
        activations = nmf_activations(self.modules.psi, feature_maps, features.log_mag.shape[1])
        probabilities = self.modules.theta(fit_time(activations, self.hparams.num_frames))
        masked = None
        if stage != sb.Stage.TRAIN:
            mask = self.own_mask_method().mask_of(activations, logits.argmax(dim=1))
            masked = self.masked_output(wavs, clean, features, logits, mask, stage)
        return L2IOutput(features, logits, activations, probabilities, masked)

    def own_mask_method(self):
        """The ``L2IMask`` of the brain's current modules (unwrapped from DDP)."""
        psi, theta, decoder = (_unwrapped(getattr(self.modules, name)) for name in ("psi", "theta", "nmf_decoder"))
        return L2IMask(psi, theta, decoder, self.hparams.relevance_th)

    def compute_objectives(self, output, batch, stage):
        """L2I's loss; in VALID and TEST also the interpretation metrics of its masks."""
        decision = output.logits.argmax(dim=1)
        fidelity = F.nll_loss(torch.log(output.theta_probabilities.clamp_min(1e-8)), decision)
        reconstruction = self.modules.nmf_decoder(output.activations).transpose(1, 2)  # [batch, frames, freq]
        rec = (reconstruction - output.features.log_mag[:, : reconstruction.shape[1]]).pow(2).mean()
        loss = fidelity + self.hparams.rec_w * rec + self.hparams.l1_w * output.activations.mean()
        if stage != sb.Stage.TRAIN:
            self.record_stage_outputs(output.masked, batch, stage, {})
        return loss


def main(argv):
    """Trains L2I and tests its best checkpoint; returns the brain (``last_stage_stats`` of TEST)."""
    hparams_file, hparams, run_opts, overrides = start_recipe(argv)
    check_l2i_family(hparams)
    validate_data_hparams(hparams)
    load_nmf_dictionary(hparams)
    add_tensorboard_logger(hparams)
    noise_stream = make_noise_stream(hparams)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"], hyperparams_to_save=hparams_file, overrides=overrides
    )
    datasets, label_encoder = prepare_datasets(hparams)
    note_class_count(hparams, label_encoder)
    load_classifier(hparams)
    mask_reference = build_mask_reference(hparams, datasets["train"])
    log_empty_mask_decision(hparams, class_names_from_encoder(label_encoder, named_class_count(hparams)), mask_reference)
    brain = L2I(
        modules=hparams["modules"], opt_class=hparams["opt_class"], hparams=hparams, run_opts=run_opts,
        checkpointer=hparams["checkpointer"], noise_stream=noise_stream,
        mask_reference=mask_reference,
    )  # fmt: skip
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
    run_script(main, sys.argv[1:])
