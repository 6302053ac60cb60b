"""The L2I (Listen to Interpret) Brain: SpeechBrain's ``CNN14PSI_stft`` decoder predicts NMF activations
from the classifier's feature maps, and ``Theta`` reproduces the decision from them.
"""

import dataclasses
import logging

import speechbrain as sb
import torch
import torch.nn.functional as F

from lmac.features import SpectralFeatures
from lmac.methods import L2IMask, fit_time, nmf_activations
from lmac.training.brain import INTERPRETER_RUN_SETTINGS, InterpreterBrain, MaskedOutput

logger = logging.getLogger(__name__)

# The settings that define what an L2I run learns (lmac.checks.check_resumes_the_same_run).
L2I_RUN_SETTINGS = INTERPRETER_RUN_SETTINGS + ("nmf_dictionary", "rec_w", "l1_w")


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
        mixed, features, logits, feature_maps = self.classify_batch(batch)
        activations = nmf_activations(self.modules.psi, feature_maps, features.log_mag.shape[1])
        probabilities = self.modules.theta(fit_time(activations, self.hparams.num_frames))
        masked = None
        if stage != sb.Stage.TRAIN:
            mask = self.own_mask_method().mask_of(activations, logits.argmax(dim=1))
            masked = self.masked_output(mixed, features, logits, mask, stage, feature_maps)
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
