"""Checks a WHAM! noise folder (``lmac.data.wham``) and, optionally, writes one clean clip mixed with
noise at 0 dB to listen to::

    python wham_prepare.py --wham_folder /data/wham_noise [--example_clean clip.wav --example_output mix.wav]
"""

import argparse
import logging
import os
import sys

import soundfile as sf

from lmac.audio.io import read_audio_mono
from lmac.cli import run_script
from lmac.data.wham import WhamNoise, combine_batches, fit_length, prepare_wham

logger = logging.getLogger(__name__)


def main(argv=None):
    """Checks a WHAM! folder and, optionally, writes one clean clip mixed with noise to listen to."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wham_folder", required=True, help="folder holding tr/, cv/ and tt/")
    parser.add_argument("--sample_rate", type=int, default=16000)
    parser.add_argument("--signal_length_s", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--example_clean", help="an audio file to mix with one noise excerpt")
    parser.add_argument("--example_output", help="where to write that mixture (wav)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    noise = WhamNoise(prepare_wham(args.wham_folder), args.sample_rate, args.signal_length_s, args.seed)
    if args.example_clean is None:
        return
    if args.example_output is None:
        parser.error("--example_clean needs --example_output")
    clean = fit_length(read_audio_mono(args.example_clean, args.sample_rate), noise.num_samples)
    mixture = combine_batches(clean[None], noise[0][None])[0]
    os.makedirs(os.path.dirname(os.path.abspath(args.example_output)), exist_ok=True)
    sf.write(args.example_output, mixture.numpy(), args.sample_rate)
    logger.info("Wrote %s: %s mixed with WHAM! noise at 0 dB.", args.example_output, args.example_clean)


def command_line():
    """What the script runs: ``main`` on the command line's arguments (a bad setting ends it in one line)."""
    run_script(main, sys.argv[1:])
