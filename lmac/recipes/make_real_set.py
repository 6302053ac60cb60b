"""An ESC-50-format set from real recordings, with each clip's event and background kept (``lmac/data/real_set.py``).

``--events_folder`` holds one sub-folder of recordings per class (any format
libsndfile reads), ``--backgrounds_folder`` any recordings to place them in.
Writes, under ``--output_folder``, what ``make_synthetic_data.py`` writes for
ESC-50 (``audio/``, ``meta/esc50.csv``, ``meta/events.csv``, ``meta/stems/``),
so the recipe trains and evaluates on it as on ESC-50::

    python make_real_set.py --events_folder drums/ --backgrounds_folder ambience/ --output_folder data/drums
    python train_classifier.py hparams/cnn14_classifier.yaml --data_folder data/drums ...

``docs/results.md`` (Real recordings) builds one from two Debian packages of recorded sounds.
"""

import argparse
import logging
import sys

from lmac.cli import run_script
from lmac.data.real_set import RealSetSettings, write_real_set

logger = logging.getLogger(__name__)


def main(argv=None):
    """Command line entry point; see the module docstring."""
    defaults = RealSetSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events_folder", required=True, help="one sub-folder of recordings per class")
    parser.add_argument("--backgrounds_folder", required=True, help="recordings to place the events in")
    parser.add_argument("--output_folder", required=True)
    parser.add_argument("--clips_per_class", type=int, default=defaults.clips_per_class)
    parser.add_argument(
        "--ratio_db",
        type=float,
        nargs=2,
        default=defaults.ratio_db,
        metavar=("LOW", "HIGH"),
        help="event-to-background energy ratio over the event, in dB, drawn per clip",
    )
    parser.add_argument("--max_event_s", type=float, default=defaults.max_event_s)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = RealSetSettings(
        ratio_db=tuple(args.ratio_db),
        max_event_s=args.max_event_s,
        clips_per_class=args.clips_per_class,
        seed=args.seed,
    )
    write_real_set(args.events_folder, args.backgrounds_folder, args.output_folder, settings)


def command_line():
    """What the script runs: ``main`` on the command line's arguments (a bad setting ends it in one line)."""
    run_script(main, sys.argv[1:])
