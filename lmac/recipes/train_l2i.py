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

import logging
import sys

import speechbrain as sb

from lmac.checks import check_resumes_the_same_run, settings_checked, validate_data_hparams
from lmac.cli import add_tensorboard_logger, run_script, start_recipe
from lmac.data.wham import make_noise_stream
from lmac.inference import class_names_from_encoder
from lmac.loading import (
    load_nmf_dictionary,
    mask_reference_with_its_decision,
    named_class_count,
    open_interpreter_data,
)
from lmac.models.families import check_l2i_family
from lmac.training.device import end_distributed_run
from lmac.training.l2i import L2I, L2I_RUN_SETTINGS

logger = logging.getLogger(__name__)


def main(argv):
    """Trains L2I and tests its best checkpoint (unless ``test_after_training`` is False); returns the brain
    (``last_stage_stats`` of TEST)."""
    hparams_file, hparams, run_opts, overrides = start_recipe(argv)
    with settings_checked():  # a bad setting ends here in one line
        check_l2i_family(hparams)
        validate_data_hparams(hparams)
        check_resumes_the_same_run(hparams, L2I_RUN_SETTINGS)
        load_nmf_dictionary(hparams)
        add_tensorboard_logger(hparams)
        noise_stream = make_noise_stream(hparams)
        test_noise_stream = (
            make_noise_stream(hparams, split="tt") if hparams["test_after_training"] else None
        )  # held out
        sb.create_experiment_directory(
            experiment_directory=hparams["output_folder"], hyperparams_to_save=hparams_file, overrides=overrides
        )
        datasets, label_encoder = open_interpreter_data(hparams)
        class_names = class_names_from_encoder(label_encoder, named_class_count(hparams))
    mask_reference = mask_reference_with_its_decision(hparams, datasets["train"], class_names)
    brain = L2I(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
        noise_stream=noise_stream,
        mask_reference=mask_reference,
    )
    brain.fit(
        brain.hparams.epoch_counter,
        train_set=datasets["train"],
        valid_set=datasets["valid"],
        train_loader_kwargs=hparams["train_dataloader_options"],
        valid_loader_kwargs=hparams["test_dataloader_options"],
    )
    if hparams["test_after_training"]:
        brain.test_best_checkpoint(datasets["test"], hparams["test_dataloader_options"], test_noise_stream)
    end_distributed_run()
    return brain


def command_line():
    """What the script runs: ``main`` on the command line's arguments."""
    run_script(main, sys.argv[1:])
