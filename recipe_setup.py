"""What every recipe does before its work starts: command line, checks, and loading weights.

``start_recipe`` is the shared start of the recipes' ``main`` functions
(SpeechBrain's command line, DDP set-up, the YAML with its overrides); the
rest checks settings and data before any work and loads the classifier, an
L-MAC decoder, an NMF dictionary or a trained L2I run. Library code: no training script imported.
"""

import contextlib
import difflib
import logging
import os
import random
import re
import sys

import numpy as np
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAML
from speechbrain.utils.distributed import run_on_main
from speechbrain.utils.train_logger import TensorboardLogger, TrainLogger

from checkpointing import BEST_CHECKPOINT_KEY
from esc50_prepare import validate_fold_lists
from features import spectral_features, stft_frame_count
from mask_references import (
    MASK_REFERENCE_FILE,
    check_mask_reference,
    load_mask_reference,
    make_mask_reference,
    save_mask_reference,
)

logger = logging.getLogger(__name__)

OVERLAP_TYPES = ("mixtures", "white_noise", "speech")
# Above this probability for the class silence gets, empty masks can pass for interpretations of that class.
SILENCE_WARNING_PROBABILITY = 0.5


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


class SettingError(ValueError):
    """A flag or setting that cannot work; the message is one line naming it and the fix."""


def run_script(main, argv):
    """Runs a recipe's ``main(argv)`` from the command line; a ``SettingError`` ends it with its one line
    (exit status 1) instead of a traceback.

    Returns
    -------
    What ``main`` returns.
    """
    try:
        return main(argv)
    except SettingError as error:
        sys.exit(f"{os.path.basename(sys.argv[0])}: error: {error}")


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
            hint = f"did you mean {' or '.join(f'--{name}' for name in close)}?" if close else "the YAML's top-level keys are its settings."
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


def validate_data_hparams(hparams):
    """Checks the settings every interpreter recipe shares, before any work starts.

    Raises
    ------
    ValueError
        WHAM! noise without ``wham_folder``, bad fold lists.
    FileNotFoundError
        A local classifier weight file that does not exist (with ``use_pretrained``).
    """
    if hparams["use_pretrained"]:
        for key in ("embedding_model_path", "classifier_model_path"):
            if _looks_local(hparams[key]) and not os.path.isfile(hparams[key]):
                raise FileNotFoundError(
                    f"{key}={hparams[key]!r} does not exist; give a local .ckpt file, a HuggingFace path "
                    "such as speechbrain/cnn14-esc50/embedding_model.ckpt, or --use_pretrained False (tests only)."
                )
    if hparams["add_wham_noise"] and not hparams["wham_folder"]:
        raise ValueError("add_wham_noise=True needs --wham_folder (a folder holding tr/*.wav).")
    validate_fold_lists(**{key: hparams[key] for key in ("train_fold_nums", "valid_fold_nums", "test_fold_nums")})
    check_mask_reference(hparams["mask_reference"])
    check_saved_mask_reference(hparams)


def saved_mask_reference_path(hparams):
    """Where a run keeps its reference ``R``: ``MASK_REFERENCE_FILE`` in ``save_folder``."""
    return os.path.join(hparams["save_folder"], MASK_REFERENCE_FILE)


def check_saved_mask_reference(hparams):
    """Raises a ``SettingError`` when the run in ``save_folder`` saved another reference than ``mask_reference``."""
    path = saved_mask_reference_path(hparams)
    if os.path.isfile(path):
        refuse_another_reference(hparams, load_mask_reference(path).name, path)


def refuse_another_reference(hparams, saved, path):
    """Raises a ``SettingError`` when ``saved``, the reference name of the run's ``path``, is not ``mask_reference``."""
    if saved != hparams["mask_reference"]:
        raise SettingError(
            f"mask_reference={hparams['mask_reference']!r}, but the run in {hparams['output_folder']!r} was trained "
            f"with {saved!r} ({path}); pass --mask_reference {saved}, or another --output_folder for a new run."
        )


def build_mask_reference(hparams, train_set):
    """The run's ``mask_reference``: the one its save folder holds, else built (``mean_spectrum`` reads the clean
    training clips) and saved there on the main process, so that the run's evaluations use the same ``R``."""
    path = saved_mask_reference_path(hparams)
    if os.path.isfile(path):
        reference = load_mask_reference(path)
        refuse_another_reference(hparams, reference.name, path)
        logger.info("mask_reference=%s: the run's own, from %s.", reference.name, path)
        return reference

    def training_batches():
        loader = sb.dataio.dataloader.make_dataloader(train_set, batch_size=hparams["batch_size"])
        for batch in loader:
            yield batch.sig.data

    def log_magnitude(wavs):
        return spectral_features(wavs, hparams["compute_stft"], hparams["classifier_input"]).log_mag

    def build_and_save():
        save_mask_reference(make_mask_reference(hparams["mask_reference"], training_batches(), log_magnitude), path)

    run_on_main(build_and_save)
    return load_mask_reference(path)


@torch.no_grad()
def empty_mask_decision(hparams, mask_reference):
    """The loaded classifier's decision on an empty mask's input: the reference ``R`` alone (silence for ``zeros``;
    a reference made from the clip is that of a silent clip).

    Arguments
    ---------
    hparams : dict
    mask_reference : mask_references.MaskReference

    Returns
    -------
    decision : int
        The class index.
    probability : float
    """
    frames = stft_frame_count(hparams["signal_length_s"], hparams["sample_rate"], hparams["hop_length"])
    classifier = hparams["modules"]["classifier"]
    parameter = next(classifier.parameters())
    silence = torch.zeros(1, frames, hparams["n_fft"] // 2 + 1, device=parameter.device)
    empty_input = mask_reference.fill(silence)  # [1, frames, freq]
    logits, _ = classifier(hparams["classifier_input"].to(parameter.device)(empty_input))
    probability, decision = torch.softmax(logits.float(), dim=1).max(dim=1)
    return int(decision), float(probability)


def log_empty_mask_decision(hparams, class_names, mask_reference):
    """Logs which class the classifier gives an empty mask's input (``R``), with its probability; warns above
    ``SILENCE_WARNING_PROBABILITY``.

    Returns
    -------
    tuple of (str, float)
        The class name and the probability.
    """
    decision, probability = empty_mask_decision(hparams, mask_reference)
    name, reference = class_names[decision], mask_reference.name
    logger.info(
        "The classifier gives an empty mask's input (mask_reference=%s) class %r with probability %.2f.",
        reference, name, probability,
    )  # fmt: skip
    if probability > SILENCE_WARNING_PROBABILITY:
        logger.warning(
            "The classifier gives an empty mask's input (mask_reference=%s) %r with probability %.2f: an empty mask "
            "already keeps that decision, so %r interpretations may be silent. Check energy_kept, silent_share "
            "and fid_in_beyond_empty; the default objective (--l_empty_w 1 --sparsity_gate True) asks every mask "
            "to beat its empty input, and another --mask_reference may be less telling to this classifier.",
            reference, name, probability, name,
        )  # fmt: skip
    return name, probability


def check_overlap_type(hparams):
    """Raises for an ``overlap_type`` (``eval.py``'s contamination of the test clips) that is not one of ``OVERLAP_TYPES``."""
    if hparams["overlap_type"] is not None and hparams["overlap_type"] not in OVERLAP_TYPES:
        raise ValueError(
            f"overlap_type={hparams['overlap_type']!r}; accepted values are {OVERLAP_TYPES} (or null for none)."
        )


def _looks_local(path):
    """True for paths meant as local files: absolute, relative to ``.``/``~``, or under an existing folder."""
    return os.path.isabs(path) or path.startswith((".", "~")) or os.path.isdir(path.split("/")[0])


def load_classifier(hparams):
    """Loads the classifier weights through the Pretrainer, unless ``use_pretrained`` is False.

    Raises
    ------
    FileNotFoundError
        A weight file is neither a local file nor fetchable; the message names the setting.
    """
    if not hparams["use_pretrained"]:
        logger.warning("use_pretrained=False: the classifier keeps random weights (for tests only).")
        return
    pretrainer = hparams["pretrainer"]
    collect_pretrained(pretrainer, hparams, ("embedding_model_path", "classifier_model_path"))
    check_classifier_outputs(hparams, os.path.join(str(pretrainer.collect_in), "classifier.ckpt"))
    pretrainer.load_collected()


def load_pretrained_embedding(hparams):
    """With ``use_pretrained``, starts the classifier's embedding from ``embedding_model_path`` (``train_classifier.py``).

    Raises
    ------
    FileNotFoundError
        The file is neither local nor fetchable.
    SettingError
        Its weights do not fit the embedding (another ``width``).
    """
    if not hparams["use_pretrained"]:
        return
    pretrainer = hparams["pretrained_encoder"]
    collect_pretrained(pretrainer, hparams, ("embedding_model_path",))
    try:
        pretrainer.load_collected()
    except RuntimeError as error:
        raise SettingError(
            f"embedding_model_path={hparams['embedding_model_path']!r} does not fit a CNN14 of width "
            f"{hparams['width']} ({str(error).splitlines()[0]}); the published one is width 1: pass --width 1."
        ) from error
    logger.info("The embedding starts from %s.", hparams["embedding_model_path"])


def collect_pretrained(pretrainer, hparams, path_keys):
    """Fetches a ``Pretrainer``'s files on the main process.

    Raises
    ------
    FileNotFoundError
        A file is neither local nor fetchable; the message names the settings ``path_keys``.
    """
    try:
        run_on_main(pretrainer.collect_files)
    except (OSError, ValueError, RuntimeError) as error:
        settings = ", ".join(f"{key}={hparams[key]!r}" for key in path_keys)
        raise FileNotFoundError(
            f"Could not get the classifier weights ({settings}): {error}. Give local .ckpt files or a reachable HuggingFace path."
        ) from error


def check_classifier_outputs(hparams, classifier_file):
    """Raises when the classifier checkpoint's number of outputs is not ``n_classes``."""
    weight = torch.load(classifier_file, map_location="cpu").get("w.weight")
    if weight is not None and weight.shape[0] != hparams["n_classes"]:
        raise ValueError(
            f"classifier_model_path={hparams['classifier_model_path']!r} has {weight.shape[0]} outputs, "
            f"but n_classes={hparams['n_classes']}; pass --n_classes {weight.shape[0]} (and the data it was trained on)."
        )


def check_class_count(hparams, label_encoder):
    """Raises when the data's number of classes is not ``n_classes``, the head's outputs (training a classifier)."""
    if len(label_encoder) != hparams["n_classes"]:
        raise SettingError(
            f"n_classes={hparams['n_classes']}, but the data in {hparams['data_folder']!r} has "
            f"{len(label_encoder)} classes; pass --n_classes {len(label_encoder)} (or --out_n_neurons)."
        )


def named_class_count(hparams):
    """How many classes a run names: those of the classifier's head and those of the data, whichever are more."""
    return max(hparams["n_classes"], hparams["data_classes"])


def note_class_count(hparams, label_encoder):
    """Records the data's class count as ``data_classes``; warns when the classifier's head has another.

    An interpreter explains the classifier's decision, so its head may have
    another class count than the data (a random head in SpeechBrain's recipe
    tests, another data set's classifier); accuracy is then not computed.
    """
    hparams["data_classes"] = len(label_encoder)
    if len(label_encoder) != hparams["n_classes"]:
        logger.warning(
            "The classifier has %d outputs (n_classes) and the data in %r %d classes: its decisions are interpreted, "
            "but accuracy is not computed.", hparams["n_classes"], hparams["data_folder"], len(label_encoder),
        )  # fmt: skip


def load_interpreter(psi_model, path, device):
    """Loads decoder weights (a state dict, e.g. ``psi_model.ckpt``) into ``psi_model``."""
    psi_model.load_state_dict(torch.load(path, map_location=device))
    logger.info("Loaded the interpreter from %s.", path)


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


def load_nmf_dictionary(hparams):
    """Loads the NMF dictionary of ``train_nmf.py`` (``nmf_dictionary``) into ``nmf_decoder`` and freezes it.

    Raises
    ------
    FileNotFoundError
        No dictionary at ``nmf_dictionary``.
    ValueError
        A dictionary of another size than ``nmf_components``.
    """
    path = hparams["nmf_dictionary"]
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"nmf_dictionary={path!r} does not exist; run `python train_nmf.py hparams/l2i_cnn14.yaml ...` with the "
            "same --output_folder first, or pass --nmf_dictionary."
        )
    state = torch.load(path, map_location="cpu")
    components = state["W"].shape[1]
    if components != hparams["nmf_components"]:
        raise ValueError(
            f"nmf_dictionary={path!r} has {components} components, but nmf_components={hparams['nmf_components']}; "
            f"pass --nmf_components {components}."
        )
    hparams["nmf_decoder"].load_state_dict(state)
    hparams["nmf_decoder"].requires_grad_(False)


def check_l2i_folder(folder):
    """The path of the ``hyperparams.yaml`` of the L2I run in ``folder``; a ``FileNotFoundError`` saying how to
    make one when there is none."""
    path = os.path.join(folder, "hyperparams.yaml")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"l2i_folder={folder!r} holds no L2I run ({path} does not exist); run `python train_nmf.py "
            "hparams/l2i_cnn14.yaml` and `python train_l2i.py hparams/l2i_cnn14.yaml` with --output_folder "
            f"{folder} and the same classifier first, or pass --l2i_folder."
        )
    return path


def load_l2i_run(folder, hparams):
    """The configuration of the ``train_l2i.py`` run in ``folder``, to compare with the run of ``hparams``.

    It is the ``hyperparams.yaml`` that SpeechBrain saved there, loaded with
    the global random state left as it was (loading it seeds and initialises
    models), and with the NMF dictionary loaded.

    Raises
    ------
    FileNotFoundError
        No L2I run, or no trained checkpoint, in ``folder``.
    ValueError
        The L2I run interprets a classifier of another width or class count.
    """
    path = check_l2i_folder(folder)
    with keep_random_state(), open(path, encoding="utf-8") as file:
        l2i = load_hyperpyyaml(file)
    for key in ("width", "n_classes"):
        if l2i[key] != hparams[key]:
            raise ValueError(
                f"The L2I run in {folder!r} has {key}={l2i[key]}, but this run has {key}={hparams[key]}; "
                "pass the --l2i_folder of an L2I run on the same classifier."
            )
    if l2i["checkpointer"].find_checkpoint(min_key=BEST_CHECKPOINT_KEY) is None:
        raise FileNotFoundError(f"l2i_folder={folder!r} holds no trained L2I checkpoint; run train_l2i.py to the end first.")
    load_nmf_dictionary(l2i)
    return l2i


@contextlib.contextmanager
def keep_random_state():
    """Restores the random states of Python, NumPy and PyTorch (CPU and CUDA) on exit."""
    states = random.getstate(), np.random.get_state()
    with torch.random.fork_rng():
        try:
            yield
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])


def check_lmac_decoder(hparams, purpose):
    """Raises when there is no L-MAC decoder to ``purpose`` (evaluate, export): neither
    ``pretrained_interpreter`` nor a checkpoint of the run."""
    interpreter = hparams["pretrained_interpreter"]
    if interpreter and not os.path.isfile(interpreter):
        raise FileNotFoundError(f"pretrained_interpreter={interpreter!r} does not exist; give a psi_model.ckpt file.")
    if not interpreter and hparams["checkpointer"].find_checkpoint(min_key=BEST_CHECKPOINT_KEY) is None:
        raise FileNotFoundError(
            f"No interpreter to {purpose}: {hparams['save_folder']} holds no checkpoint; "
            "pass --pretrained_interpreter path/psi_model.ckpt or --output_folder of a trained run."
        )


def load_lmac_decoder(hparams):
    """Loads ``pretrained_interpreter``, or the run's best checkpoint, into ``hparams["psi_model"]``."""
    if hparams["pretrained_interpreter"]:
        load_interpreter(hparams["psi_model"], hparams["pretrained_interpreter"], "cpu")
    else:
        hparams["checkpointer"].recover_if_possible(min_key=BEST_CHECKPOINT_KEY)
