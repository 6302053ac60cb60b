"""Synthetic ESC-50-format and WHAM!-format data, deterministic from a seed.

Writes, under ``--output_folder``::

    ESC50/meta/esc50.csv      # filename,fold,target,category,esc10,src_file,take
    ESC50/meta/events.csv     # filename,onset_s,offset_s,fmin_hz,fmax_hz
    ESC50/meta/stems/<clip id>_event.wav, _background.wav   # each clip's parts; they add up to it
    ESC50/audio/*.wav         # 44.1 kHz mono 5 s clips, one sound event each
    wham_noise/{tr,cv,tt}/*.wav   # 16 kHz two-channel non-stationary noise
    synthetic_data.json       # the settings that produced the folder

Each class is one kind of synthetic sound event (tone, chirp, harmonic stack,
band-limited noise burst, click train, ...) in its own frequency band, placed
at a random time and level over a pink-noise background (quiet by default;
``--background_rms`` raises it, and events then sit at a lower SNR, a harder
task with the same event boxes). ``events.csv``
gives the time span and frequency band that hold the event, for localisation
checks; the stems are the ground truth of the listening measures. Every fold holds the same number of clips of every class.

``--scenario`` chooses the classes (``SCENARIOS``):

- ``events`` [default]: the event families above;
- ``silence_class``: class 0 is a soft, short tick in near-silence and the
  others are ``events`` classes, so a classifier trained on it gives silence
  class 0 (the shortcut an empty mask can take);
- ``speech_like``: vowel-like syllables (a voice's harmonics shaped by two
  formants, one pair per class) in bursts separated by pauses.

    python make_synthetic_data.py --output_folder data/synthetic --n_classes 10 --clips_per_class 40
"""

import argparse
import logging
import sys

from lmac.cli import run_script
from lmac.data.synthetic import BACKGROUND_RMS, SCENARIOS, generate

logger = logging.getLogger(__name__)


def main(argv=None):
    """Command line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_folder", default="data/synthetic")
    parser.add_argument("--n_classes", type=int, default=10, help="2 to 50")
    parser.add_argument("--clips_per_class", type=int, default=40, help="at least 5")
    parser.add_argument("--noise_files", type=int, nargs=3, default=[40, 10, 10], metavar=("TR", "CV", "TT"))
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--background_rms", type=float, default=BACKGROUND_RMS, help="louder: events at a lower SNR")
    parser.add_argument("--scenario", default="events", choices=list(SCENARIOS), help="the classes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    generate(
        args.output_folder,
        args.n_classes,
        args.clips_per_class,
        tuple(args.noise_files),
        args.seed,
        args.background_rms,
        args.scenario,
    )


def command_line():
    """What the script runs: ``main`` on the command line's arguments (a bad setting ends it in one line)."""
    run_script(main, sys.argv[1:])
