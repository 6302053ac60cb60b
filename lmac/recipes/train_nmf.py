"""Learns the NMF dictionary of the L2I baseline on the training clips.

    python train_nmf.py hparams/l2i_cnn14.yaml --data_folder /data/ESC50 [--nmf_components 100]

The ``log1p`` magnitude spectrograms of the training folds (clean, the
spectrogram L-MAC masks) are cut into frames, at most ``nmf_max_frames`` of
them drawn at random, and factorised as ``V ~ W H`` with ``W`` ``[freq, K]``
and ``H`` non-negative, by Lee and Seung's multiplicative updates for the
squared Euclidean distance. ``W`` is saved as the state of SpeechBrain's
``NMFDecoderAudio`` (``nmf_dictionary``), which ``train_l2i.py`` loads,
with ``nmf_report.json`` (relative reconstruction error) and a picture; the
error is also a line of ``train_log.txt``.
"""

import logging
import sys

import speechbrain as sb

from lmac.checks import settings_checked
from lmac.cli import run_script, start_recipe
from lmac.data.esc50 import prepare_datasets
from lmac.models.families import check_l2i_family
from lmac.training.nmf import learn_dictionary

logger = logging.getLogger(__name__)


def main(argv):
    """Prepares the data and learns the dictionary; returns the report."""
    hparams_file, hparams, run_opts, overrides = start_recipe(argv)
    with settings_checked():  # a bad setting ends here in one line
        check_l2i_family(hparams)
        sb.create_experiment_directory(
            experiment_directory=hparams["output_folder"], hyperparams_to_save=hparams_file, overrides=overrides
        )
        datasets, _ = prepare_datasets(hparams)
    report = learn_dictionary(hparams, datasets, run_opts.get("device", "cpu"))
    hparams["train_logger"].log_stats(
        stats_meta={"NMF components": report["components"], "frames": report["frames"]},
        train_stats={"relative_error": report["relative_error"]},
    )
    return report


def command_line():
    """What the script runs: ``main`` on the command line's arguments."""
    run_script(main, sys.argv[1:])
