"""Trains the ESC-50 classifier that L-MAC interprets: CNN14 by default, or any classifier family.

    python train_classifier.py hparams/cnn14_classifier.yaml --data_folder /data/ESC50 [--classifier_family ecapa]

It uses the interpreter's data preparation and the family's input features
(CNN14's: ``log1p`` of the mel filterbank of the STFT magnitude), optionally WHAM! noise in training,
keeps the checkpoint with the best validation accuracy, tests it, draws a
confusion matrix and exports ``embedding_model.ckpt`` and ``classifier.ckpt``
to ``<output_folder>/export/`` for ``train_lmac.py``::

    python train_lmac.py hparams/lmac_cnn14.yaml \
        --embedding_model_path <output_folder>/export/embedding_model.ckpt \
        --classifier_model_path <output_folder>/export/classifier.ckpt
"""

import logging
import sys

import speechbrain as sb
from speechbrain.utils.distributed import if_main_process

from lmac.checks import check_class_count, settings_checked
from lmac.cli import add_tensorboard_logger, run_script, start_recipe
from lmac.data.esc50 import prepare_datasets
from lmac.data.wham import make_noise_stream
from lmac.loading import load_pretrained_embedding
from lmac.training.classifier import BEST_CLASSIFIER_KEY, ClassifierBrain, export_classifier
from lmac.training.device import end_distributed_run

logger = logging.getLogger(__name__)


def main(argv):
    """Prepares data, trains, tests the best checkpoint and exports it; returns the brain."""
    hparams_file, hparams, run_opts, overrides = start_recipe(argv)
    with settings_checked():  # a bad setting ends here in one line
        add_tensorboard_logger(hparams)
        sb.create_experiment_directory(
            experiment_directory=hparams["output_folder"], hyperparams_to_save=hparams_file, overrides=overrides
        )
        datasets, label_encoder = prepare_datasets(hparams)
        check_class_count(hparams, label_encoder)
        load_pretrained_embedding(hparams)
    brain = ClassifierBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
        noise_stream=make_noise_stream(hparams),
        class_names=[label_encoder.ind2lab.get(index, str(index)) for index in range(hparams["n_classes"])],
    )
    brain.fit(
        hparams["epoch_counter"],
        train_set=datasets["train"],
        valid_set=datasets["valid"],
        train_loader_kwargs=hparams["train_dataloader_options"],
        valid_loader_kwargs=hparams["test_dataloader_options"],
    )
    brain.evaluate(datasets["test"], max_key=BEST_CLASSIFIER_KEY, test_loader_kwargs=hparams["test_dataloader_options"])
    if if_main_process():
        export_classifier(hparams["checkpointer"], hparams["save_folder"], hparams["export_folder"])
    end_distributed_run()
    return brain


def command_line():
    """What the script runs: ``main`` on the command line's arguments."""
    run_script(main, sys.argv[1:])
