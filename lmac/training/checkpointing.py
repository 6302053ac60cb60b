"""Checkpoints a run can trust: only those whose saving finished, and the key that selects the best.

SpeechBrain's ``Checkpointer`` writes a checkpoint's meta file before its
parameter files; ``CompleteCheckpointer`` writes ``COMPLETE_MARKER`` last and
lists only marked folders.
"""

import logging
import os

from speechbrain.utils.checkpoints import Checkpointer

logger = logging.getLogger(__name__)


# Written into a checkpoint folder once every file of it is saved.
COMPLETE_MARKER = "COMPLETE"


# The validation statistic that selects the best checkpoint (lower is better).
BEST_CHECKPOINT_KEY = "loss"


class CompleteCheckpointer(Checkpointer):
    """SpeechBrain's ``Checkpointer`` that only trusts checkpoints whose saving finished.

    SpeechBrain writes a checkpoint's meta file first and its parameter files
    after it, so a run killed while saving leaves a folder that looks like a
    checkpoint. This one writes ``COMPLETE`` last and lists (so finds,
    recovers, keeps and deletes) only folders that have it; an interrupted
    one is left on disk, ignored, with a warning.

    Arguments
    ---------
    *args, **kwargs
        As for ``speechbrain.utils.checkpoints.Checkpointer``.
    optional : list of str
        Recoverables a checkpoint may lack (SpeechBrain's optional load): they
        then keep their configured state, with SpeechBrain's warning.
    """

    def __init__(self, *args, optional=(), **kwargs):
        super().__init__(*args, **kwargs)
        self._reported_incomplete = set()
        for name in optional:
            self.optional_recoverables[name] = True

    def save_checkpoint(self, *args, **kwargs):
        """Saves as SpeechBrain does, then marks the checkpoint complete (main process)."""
        checkpoint = super().save_checkpoint(*args, **kwargs)
        if checkpoint is not None:
            with open(os.path.join(checkpoint.path, COMPLETE_MARKER), "w", encoding="utf-8") as file:
                file.write("all files of this checkpoint were written\n")
        return checkpoint

    def list_checkpoints(self):
        """The complete checkpoints; incomplete ones are reported once and left alone."""
        complete = []
        for checkpoint in super().list_checkpoints():
            if os.path.isfile(os.path.join(checkpoint.path, COMPLETE_MARKER)):
                complete.append(checkpoint)
            elif checkpoint.path not in self._reported_incomplete:
                self._reported_incomplete.add(checkpoint.path)
                logger.warning("Ignoring %s: its saving was interrupted, so it is incomplete.", checkpoint.path)
        return complete
