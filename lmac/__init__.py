"""The L-MAC recipe's library: everything but the command-line scripts at the repository's top.

- ``lmac.audio``: reading audio files (``io``) and long recordings in blocks (``stream``);
- ``lmac.data``: ESC-50 (``esc50``), WHAM! noise (``wham``), the synthetic data sets (``synthetic``) and
  the test-time contaminations of ``eval.py`` (``contamination``);
- ``lmac.features``, ``lmac.masking``, ``lmac.mask_references``: spectrograms, masks and what fills the
  cells a mask removes;
- ``lmac.models``: the classifier families (``families``, ``cnn14``, ``vit``), the frozen classifier and
  the decoder of feature maps (``map_decoder``);
- ``lmac.methods`` (the interpretation methods) and ``lmac.metrics`` (their scores);
- ``lmac.training``: the Brains (``brain``, ``lmac``, ``l2i``, ``classifier``), NMF, checkpoints and devices;
- ``lmac.inference``: ``LMACInterpreter``, interpreting sound files from Python;
- ``lmac.reporting``: pictures, training curves, the listening report and comparison tables;
- ``lmac.checks`` and ``lmac.loading``: what a recipe checks and loads before its work starts;
- ``lmac.cli`` and ``lmac.recipes``: the command line and each script's ``main``. The library never
  imports these two; the scripts at the top only call ``lmac.recipes``.
"""

import logging
import os


class WithoutMessage(logging.Filter):
    """A logging filter that drops the records of one message and passes every other."""

    def __init__(self, message):
        super().__init__()
        self.message = message

    def filter(self, record):
        """False for ``message``, True otherwise."""
        return record.getMessage() != self.message


# SpeechBrain's train_logger warns on import that torchvision is missing and figures cannot be saved. The recipe
# draws its figures with matplotlib, so the warning is false here and would alarm a newcomer on every command.
TORCHVISION_WARNING = "torchvision is not available - cannot save figures"
logging.getLogger("speechbrain.utils.train_logger").addFilter(WithoutMessage(TORCHVISION_WARNING))

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HPARAMS_FOLDER = os.path.join(REPOSITORY, "hparams")
