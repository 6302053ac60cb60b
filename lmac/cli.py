"""The recipes' command line: SpeechBrain's arguments and YAML overrides, checked before anything is
loaded (``start_recipe``), a one-line end for a bad setting (``run_script``), and TensorBoard logging.

Only the recipes (``lmac.recipes``) import this module; the library does not.
"""

import difflib
import logging
import os
import re
import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAML
from speechbrain.utils.train_logger import TensorboardLogger, TrainLogger

from lmac.checks import SettingError

logger = logging.getLogger(__name__)


def start_recipe(argv, placeholders_not_needed=()):
    """Parses SpeechBrain's command line, joins DDP when launched so, and loads the YAML with the overrides.

    ``--test_only [True|False]`` is read as an ordinary hyperparameter
    (``take_test_only_flag``) where the YAML has that key. A flag that is
    not a key of the YAML, or a missing ``!PLACEHOLDER`` key, stops the run
    before anything is loaded (``check_settings_given``).

    Arguments
    ---------
    argv : list of str
        ``[hparams.yaml, --key value, ...]``.
    placeholders_not_needed : tuple of str
        ``!PLACEHOLDER`` keys this run does not read (``data_folder`` when
        interpreting one's own files): null when not given.

    Returns
    -------
    hparams_file : str
    hparams : dict
    run_opts : dict
        SpeechBrain's run options (``--device``, ``--precision``, ...).
    overrides : str
        The YAML overrides, as saved in the experiment folder.
    """
    argv, test_only = take_test_only_flag(argv)
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    if test_only is not None:
        overrides = f"{overrides}\ntest_only: {test_only}"
    overrides = check_settings_given(hparams_file, overrides, placeholders_not_needed)
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as file:
        hparams = load_hyperpyyaml(file, overrides)
    return hparams_file, hparams, run_opts, overrides


def run_script(main, argv):
    """Runs a recipe's ``main(argv)`` from the command line. A ``SettingError`` (a bad flag or setting, raised
    before the work starts) ends it with its one line on stderr and exit status 2, as argparse ends a bad
    argument; with ``--debug`` the traceback is kept.

    Returns
    -------
    What ``main`` returns.
    """
    try:
        return main(argv)
    except SettingError as error:
        if "--debug" in argv:
            raise
        sys.stderr.write(f"{os.path.basename(sys.argv[0])}: error: {error}\n")
        sys.exit(2)


def yaml_top_level_keys(hparams_file):
    """The top-level keys of a YAML file, and those of them marked ``!PLACEHOLDER`` with the comment after the tag.

    Returns
    -------
    keys : list of str
    placeholders : dict of str to str
    """
    keys, placeholders = [], {}
    with open(hparams_file, encoding="utf-8") as file:
        for line in file:
            match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\s*:(.*)", line)
            if match:
                keys.append(match.group(1))
                value = match.group(2).strip()
                if value.startswith("!PLACEHOLDER"):
                    placeholders[match.group(1)] = value[len("!PLACEHOLDER") :].lstrip(" #")
    return keys, placeholders


def check_settings_given(hparams_file, overrides, placeholders_not_needed=()):
    """Checks the command line's overrides against the YAML's keys before anything is loaded.

    Arguments
    ---------
    hparams_file : str
    overrides : str
        SpeechBrain's overrides, a YAML mapping of the ``--key value`` flags.
    placeholders_not_needed : tuple of str
        ``!PLACEHOLDER`` keys set to null when not given.

    Returns
    -------
    str
        The overrides, with the unneeded placeholders added.

    Raises
    ------
    SettingError
        A flag that is not a key of ``hparams_file`` (with the closest keys),
        or a ``!PLACEHOLDER`` key that was not given.
    """
    keys, placeholders = yaml_top_level_keys(hparams_file)
    given = YAML(typ="safe").load(overrides) or {}
    for key in given:
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=2, cutoff=0.75)
            hint = (
                f"did you mean {' or '.join(f'--{name}' for name in close)}?"
                if close
                else "the YAML's top-level keys are its settings."
            )
            raise SettingError(f"--{key} is not a setting of {hparams_file}; {hint}")
    missing = [key for key in placeholders if key not in given and key not in placeholders_not_needed]
    if missing:
        key = missing[0]
        hint = f" ({placeholders[key]})" if placeholders[key] else ""
        raise SettingError(f"{key} has no default in {hparams_file}: pass --{key}{hint}.")
    unneeded = [key for key in placeholders_not_needed if key in placeholders and key not in given]
    return "\n".join([overrides, *(f"{key}: null" for key in unneeded)])


class TrainLoggers(TrainLogger):
    """SpeechBrain train loggers used as one: each ``log_stats`` goes to every one of them, in order."""

    def __init__(self, *loggers):
        self.loggers = loggers

    def log_stats(self, *args, **kwargs):
        """``log_stats`` of every logger, with the same arguments."""
        for logger_ in self.loggers:
            logger_.log_stats(*args, **kwargs)


class FlushedTensorboardLogger(TensorboardLogger):
    """SpeechBrain's ``TensorboardLogger`` whose events reach the disk at every ``log_stats``.

    TensorBoard's writer flushes on a timer; a run that ends (or is killed)
    between two flushes would lose the last epoch and the test line.
    """

    def log_stats(self, *args, **kwargs):
        """SpeechBrain's ``log_stats``, then a flush (the writer exists on the main process only)."""
        super().log_stats(*args, **kwargs)
        if self.writer is not None:
            self.writer.flush()


def add_tensorboard_logger(hparams):
    """With ``use_tensorboard``, makes ``train_logger`` also log to SpeechBrain's ``TensorboardLogger``.

    Its logs go to ``tensorboard_logs_folder`` (``tensorboard --logdir`` reads them).

    Raises
    ------
    ImportError
        TensorBoard is not installed; the message says how to install it or turn it off.
    """
    if not hparams["use_tensorboard"]:
        return
    try:
        tensorboard = FlushedTensorboardLogger(hparams["tensorboard_logs_folder"])
    except ImportError as error:
        raise ImportError(
            f"use_tensorboard=True needs TensorBoard, which is not installed ({error}); "
            "run `pip install tensorboard`, or pass --use_tensorboard False."
        ) from error
    hparams["train_logger"] = TrainLoggers(hparams["train_logger"], tensorboard)


def take_test_only_flag(argv):
    """Takes ``--test_only [True|False]`` (or ``--test_only=VALUE``) out of the command line.

    SpeechBrain parses ``--test_only`` as a bare flag, so ``--test_only True``
    would hand ``True`` to the previous override. The recipe reads the value
    as an ordinary hyperparameter instead, which ``Brain`` also picks up.

    Arguments
    ---------
    argv : list of str

    Returns
    -------
    argv : list of str
        Without the flag.
    value : str or None
        ``"True"``, ``"False"``, or None when the flag is absent.

    Example
    -------
    >>> take_test_only_flag(["h.yaml", "--test_only", "True", "--lr", "1"])
    (['h.yaml', '--lr', '1'], 'True')
    >>> take_test_only_flag(["h.yaml", "--test_only"])
    (['h.yaml'], 'True')
    """
    remaining, value, index = [], None, 0
    while index < len(argv):
        arg = argv[index]
        if arg.startswith("--test_only="):
            value = arg.split("=", 1)[1]
        elif arg == "--test_only":
            following = argv[index + 1] if index + 1 < len(argv) else None
            if following in ("True", "False"):
                value = following
                index += 1
            else:
                value = "True"
        else:
            remaining.append(arg)
        index += 1
    return remaining, value
