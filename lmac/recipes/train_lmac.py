"""Trains an L-MAC interpreter of a frozen audio classifier (CNN14 on ESC-50 by default).

    python train_lmac.py hparams/lmac_cnn14.yaml --data_folder /data/ESC50 \
        --add_wham_noise True --wham_folder /data/wham_noise

Fine-tuning with the cross-correlation guidance:

    python train_lmac.py hparams/lmac_cnn14.yaml --data_folder /data/ESC50 \
        --finetuning True --pretrained_interpreter path/psi_model.ckpt --g_w 4

Evaluation only (the run's best checkpoint, or ``--pretrained_interpreter``):

    python train_lmac.py hparams/lmac_cnn14.yaml --data_folder /data/ESC50 --test_only True

The method, its formulas and defaults: ``docs/method.md``.
"""

import logging
import os
import sys

import speechbrain as sb

from lmac.checks import check_overlap_type, check_resumes_the_same_run, settings_checked, validate_data_hparams
from lmac.cli import add_tensorboard_logger, run_script, start_recipe
from lmac.data.wham import make_noise_stream
from lmac.inference import class_names_from_encoder
from lmac.loading import (
    load_interpreter,
    mask_reference_with_its_decision,
    named_class_count,
    open_interpreter_data,
)
from lmac.metrics import ENERGY_SCOPES, load_event_table
from lmac.scoring import write_per_class
from lmac.training.brain import PER_CLASS_TEST_FILE
from lmac.training.checkpointing import BEST_CHECKPOINT_KEY
from lmac.training.device import end_distributed_run
from lmac.training.lmac import CROSSCOR_TYPES, GUIDELOSS_TYPES, LMAC, LMAC_RUN_SETTINGS, MASKED_OUT_LOSSES

logger = logging.getLogger(__name__)

# The settings that name one of a few choices, and those choices.
NAMED_CHOICES = {
    "crosscortype": CROSSCOR_TYPES,
    "guidelosstype": GUIDELOSS_TYPES,
    "masked_out_loss": MASKED_OUT_LOSSES,
    "energy_scope": tuple(ENERGY_SCOPES),
}


def validate_hparams(hparams):
    """Checks the settings that would fail later, before any work starts.

    Raises
    ------
    ValueError
        An unknown value of a ``NAMED_CHOICES`` setting, fine-tuning without
        ``pretrained_interpreter``, an unknown ``overlap_type``, a run in ``output_folder`` trained with other
        settings, or what ``lmac.checks.validate_data_hparams`` refuses.
    FileNotFoundError
        A checkpoint path that does not exist, or ``test_only`` with nothing to test.
    """
    for setting, accepted in NAMED_CHOICES.items():
        if hparams[setting] not in accepted:
            raise ValueError(f"{setting}={hparams[setting]!r}; accepted values are {', '.join(accepted)}.")
    if hparams["finetuning"] and not hparams["pretrained_interpreter"]:
        raise ValueError("finetuning=True needs a trained decoder: pass --pretrained_interpreter path/psi_model.ckpt.")
    path = hparams["pretrained_interpreter"]
    if path and not os.path.isfile(path):
        raise FileNotFoundError(
            f"pretrained_interpreter={path!r} does not exist; give the path of a psi_model.ckpt file."
        )
    validate_data_hparams(hparams)
    check_overlap_type(hparams)
    no_checkpoint = hparams["checkpointer"].find_checkpoint(min_key=BEST_CHECKPOINT_KEY) is None
    if hparams["test_only"] and no_checkpoint and not hparams["pretrained_interpreter"]:
        raise FileNotFoundError(
            f"test_only=True, but {hparams['save_folder']} holds no checkpoint and no --pretrained_interpreter "
            "was given; train first or pass --pretrained_interpreter path/psi_model.ckpt."
        )
    if not hparams["test_only"]:
        check_resumes_the_same_run(hparams, LMAC_RUN_SETTINGS)


def main(argv):
    """Runs the recipe: validate, prepare data, load the classifier, train, test the best checkpoint.

    Returns
    -------
    brain : LMAC
        With the best checkpoint loaded and ``last_stage_stats`` of TEST; with ``test_after_training`` False (and
        not ``test_only``), as training left it, untested.
    datasets : dict of str to DynamicItemDataset
    """
    hparams_file, hparams, run_opts, overrides = start_recipe(argv)
    with settings_checked():  # a bad setting ends here in one line
        validate_hparams(hparams)
        add_tensorboard_logger(hparams)
        noise_stream = make_noise_stream(hparams)  # finds (or fails on) the WHAM! files before any work
        tested = hparams["test_only"] or hparams["test_after_training"]
        test_noise_stream = make_noise_stream(hparams, split="tt") if tested else None  # held out, as eval.py's
        sb.create_experiment_directory(
            experiment_directory=hparams["output_folder"], hyperparams_to_save=hparams_file, overrides=overrides
        )
        datasets, label_encoder = open_interpreter_data(hparams)
        class_names = class_names_from_encoder(label_encoder, named_class_count(hparams))
    mask_reference = mask_reference_with_its_decision(hparams, datasets["train"], class_names)
    brain = LMAC(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
        noise_stream=noise_stream,
        events=load_event_table(hparams["data_folder"]),
        mask_reference=mask_reference,
        class_names=class_names,
    )
    if hparams["pretrained_interpreter"]:
        load_interpreter(brain.modules.psi, hparams["pretrained_interpreter"], brain.device)
    if not hparams["test_only"]:
        brain.fit(
            hparams["epoch_counter"],
            train_set=datasets["train"],
            valid_set=datasets["valid"],
            train_loader_kwargs=hparams["train_dataloader_options"],
            valid_loader_kwargs=hparams["test_dataloader_options"],
        )
    if tested:
        brain.test_best_checkpoint(datasets["test"], hparams["test_dataloader_options"], test_noise_stream)
        write_per_class(brain.per_class_stats, class_names, os.path.join(hparams["output_folder"], PER_CLASS_TEST_FILE))
    end_distributed_run()
    return brain, datasets


def command_line():
    """What the script runs: ``main`` on the command line's arguments."""
    run_script(main, sys.argv[1:])
