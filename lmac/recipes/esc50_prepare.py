"""Prepares an ESC-50 folder by hand: the manifests of the three fold lists and the label encoder
(``lmac.data.esc50``), and a summary of the datasets::

    python esc50_prepare.py --data_folder /data/ESC50 --output_folder results/prep
"""

import argparse
import logging
import os
import sys

from lmac.cli import run_script
from lmac.data.esc50 import dataio_prep, prepare_esc50

logger = logging.getLogger(__name__)


def main(argv=None):
    """Prepares an ESC-50 folder from the command line and summarises the datasets."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_folder", required=True, help="folder with meta/esc50.csv and audio/")
    parser.add_argument("--output_folder", required=True, help="where manifests and the label encoder go")
    parser.add_argument("--sample_rate", type=int, default=16000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    hparams = {"sample_rate": args.sample_rate, "save_folder": args.output_folder}
    for split in ("train", "valid", "test"):
        hparams[f"{split}_annotation"] = os.path.join(args.output_folder, f"{split}.json")
    prepare_esc50(
        data_folder=args.data_folder,
        audio_data_folder=os.path.join(args.data_folder, "audio"),
        save_json_train=hparams["train_annotation"],
        save_json_valid=hparams["valid_annotation"],
        save_json_test=hparams["test_annotation"],
    )
    datasets, label_encoder = dataio_prep(hparams)
    first = datasets["train"][0]
    logger.info(
        "%d classes; train %d, valid %d, test %d clips; first item %s: %d samples at %d Hz, label %s.",
        len(label_encoder),
        *(len(datasets[split]) for split in ("train", "valid", "test")),
        first["id"],
        first["sig"].shape[0],
        args.sample_rate,
        label_encoder.decode_ndim(first["class_string_encoded"])[0],
    )


def command_line():
    """What the script runs: ``main`` on the command line's arguments (a bad setting ends it in one line)."""
    run_script(main, sys.argv[1:])
