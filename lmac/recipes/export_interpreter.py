"""Exports a trained L-MAC interpreter as a self-contained folder for ``LMACInterpreter.from_hparams``.

    python export_interpreter.py hparams/lmac_cnn14.yaml --output_folder RUN \
        [--pretrained_interpreter path/psi_model.ckpt] [--export_folder DIR]

It takes the flags ``eval.py`` takes (``--width``, ``--n_classes``, the
classifier paths, ...). The folder (``export_folder``, by default
``<output_folder>/export``) has the layout of a SpeechBrain model card:
``hyperparams.yaml`` (``hparams/lmac_interpreter.yaml`` resolved with the
run's settings), ``embedding_model.ckpt`` and ``classifier.ckpt`` (the classifier),
``psi.ckpt`` (the run's best decoder, or ``--pretrained_interpreter``) and
``label_encoder.ckpt`` (the run's class names). Then, from Python::

    from lmac.inference import LMACInterpreter
    interpreter = LMACInterpreter.from_hparams(source="RUN/export", savedir="pretrained/lmac")
    result = interpreter.interpret_file("my_sound.wav", savedir="interpretations")
"""

import logging
import os
import shutil
import sys

import torch
from hyperpyyaml import resolve_references

from lmac import HPARAMS_FOLDER
from lmac.checks import check_lmac_decoder, settings_checked
from lmac.cli import run_script, start_recipe
from lmac.data.esc50 import LABEL_ENCODER_FILE
from lmac.loading import load_classifier, load_lmac_decoder

logger = logging.getLogger(__name__)

INTERPRETER_HPARAMS = os.path.join(HPARAMS_FOLDER, "lmac_interpreter.yaml")
# The settings of the run that the exported hyperparams.yaml carries.
RUN_SETTINGS = (
    "sample_rate",
    "signal_length_s",
    "n_fft",
    "hop_length",
    "win_length",
    "n_mels",
    "width",
    "classifier_family",
    "n_classes",
    "batch_size",
)
EXPORTED_WEIGHTS = {"embedding_model": "embedding_model", "classifier": "classifier", "psi": "psi_model"}
EXPORT_HEADER = (
    "# An exported L-MAC interpreter: LMACInterpreter.from_hparams(source=<this folder>, savedir=...).\n"
    "# hparams/lmac_interpreter.yaml of the recipe, resolved with the run's settings.\n"
)


def inference_hparams_text(hparams):
    """``hparams/lmac_interpreter.yaml`` resolved with each of ``RUN_SETTINGS`` set to its value in ``hparams``.

    Resolved as SpeechBrain saves an experiment's ``hyperparams.yaml``: the
    STFT block it includes is written out; the classifier family is named
    (``classifier_family``), and its block is read from the recipe's
    ``hparams/blocks`` when the export loads. Its whole-line comments are
    left out (resolving moves them out of place).

    Example
    -------
    >>> settings = {key: 7 for key in RUN_SETTINGS} | {"width": 0.0625, "classifier_family": "conv2d"}
    >>> text = inference_hparams_text(settings)
    >>> "width: 0.0625" in text and "classifier_family: conv2d" in text and "!include" not in text
    True
    """
    settings = {key: hparams[key] for key in RUN_SETTINGS}
    with open(INTERPRETER_HPARAMS, encoding="utf-8") as file:
        resolved = resolve_references(file, settings, overrides_must_match=True).getvalue()
    lines = [line for line in resolved.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return EXPORT_HEADER + "\n".join(lines) + "\n"


def check_exportable(hparams):
    """Raises, before anything is written, when the run has no decoder or no label encoder to export."""
    check_lmac_decoder(hparams, "export")
    if not os.path.isfile(os.path.join(hparams["save_folder"], LABEL_ENCODER_FILE)):
        raise FileNotFoundError(
            f"No class names to export: {os.path.join(hparams['save_folder'], LABEL_ENCODER_FILE)} does not exist; "
            "train_lmac.py writes it, so pass the --output_folder of a run that prepared its data."
        )


def export(hparams):
    """Loads the run's classifier and decoder and writes the export folder; returns its path."""
    check_exportable(hparams)
    load_classifier(hparams)
    load_lmac_decoder(hparams)
    folder = hparams["export_folder"]
    os.makedirs(folder, exist_ok=True)
    for name, key in EXPORTED_WEIGHTS.items():
        torch.save(hparams[key].state_dict(), os.path.join(folder, f"{name}.ckpt"))
    shutil.copyfile(
        os.path.join(hparams["save_folder"], LABEL_ENCODER_FILE), os.path.join(folder, "label_encoder.ckpt")
    )
    with open(os.path.join(folder, "hyperparams.yaml"), "w", encoding="utf-8") as file:
        file.write(inference_hparams_text(hparams))
    logger.info("Exported the interpreter to %s: LMACInterpreter.from_hparams(source=%r, savedir=...).", folder, folder)
    return folder


def main(argv):
    """Command-line entry point; returns the export folder."""
    _, hparams, _, _ = start_recipe(argv, placeholders_not_needed=("data_folder",))
    with settings_checked():  # a bad setting ends here in one line
        return export(hparams)


def command_line():
    """What the script runs: ``main`` on the command line's arguments."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_script(main, sys.argv[1:])
