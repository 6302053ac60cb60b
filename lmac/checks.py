"""Settings checked before any work starts: each bad one raises one line that names it and the fix.

``SettingError`` is that line's exception (the scripts end with it, without a traceback).
"""

import contextlib
import logging
import os

import torch

from lmac.data.contamination import OVERLAPS
from lmac.data.esc50 import validate_fold_lists
from lmac.mask_references import MASK_REFERENCE_FILE, check_mask_reference, load_mask_reference
from lmac.training.checkpointing import BEST_CHECKPOINT_KEY

logger = logging.getLogger(__name__)


OVERLAP_TYPES = tuple(OVERLAPS)


class SettingError(ValueError):
    """A flag or setting that cannot work; the message is one line naming it and the fix."""


class MissingFileError(SettingError, FileNotFoundError):
    """A setting naming a file or folder that is not there (still a ``FileNotFoundError``)."""


class ExistingFolderError(SettingError, FileExistsError):
    """A setting naming a folder that holds something else, which nothing overwrites (still a ``FileExistsError``)."""


@contextlib.contextmanager
def settings_checked():
    """The opening of a recipe, where every error is a bad setting: its checks raise a ``ValueError`` or
    ``FileNotFoundError`` whose message is one line naming the setting and the fix. Inside this context such an
    error is raised again as a ``SettingError`` (``MissingFileError``), which the command line prints as that one
    line (``lmac.cli.run_script``).

    Example
    -------
    >>> with settings_checked():
    ...     raise FileNotFoundError("data_folder='x' holds no meta/esc50.csv")
    Traceback (most recent call last):
    ...
    lmac.checks.MissingFileError: data_folder='x' holds no meta/esc50.csv
    """
    try:
        yield
    except SettingError:
        raise
    except FileNotFoundError as error:
        raise MissingFileError(str(error)) from error
    except ValueError as error:
        raise SettingError(str(error)) from error


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


# What SpeechBrain writes into a run's output folder: the run's settings, each top-level one on a line of its own.
RUN_SETTINGS_FILE = "hyperparams.yaml"
# A setting missing from that file: the run was made by code without it, so what it did there is unknown ...
NOT_RECORDED = "not recorded"
# ... but for these settings, added with a default that does what the code did before them: that value.
BEFORE_RECORDED = {"energy_scope": "clip"}


def check_resumes_the_same_run(hparams, keys):
    """Refuses to resume a run trained with other values of ``keys`` (the settings that define what it learns).

    SpeechBrain's checkpointer resumes the run in ``save_folder`` whatever the
    settings; a finished run is not trained again. So after a changed setting
    or default, the same command would report the old run as the new one. The
    run's settings are those of ``RUN_SETTINGS_FILE`` in ``output_folder``, read
    before the new run writes its own. Call it only where training would resume.

    Arguments
    ---------
    hparams : dict
        The run's settings, with ``output_folder`` and ``checkpointer``.
    keys : tuple of str
        Top-level scalar settings (numbers, booleans, names, paths).

    Raises
    ------
    SettingError
        One line naming the changed settings, their two values and the fix.
    """
    record = os.path.join(hparams["output_folder"], RUN_SETTINGS_FILE)
    if not os.path.isfile(record) or hparams["checkpointer"].find_checkpoint() is None:
        return
    made = {**BEFORE_RECORDED, **recorded_settings(record, keys)}
    values = setting_differences(made, {key: setting_value(str(hparams[key])) for key in keys if key in hparams})
    if values:
        raise SettingError(
            f"{hparams['output_folder']} holds a run trained with other settings ({values}), which resuming would "
            "report as this one; pass another --output_folder, or delete that folder to train again."
        )


def setting_differences(recorded, now):
    """``key old, now new`` for each setting of ``now`` whose value differs from ``recorded``'s (``NOT_RECORDED``
    where ``recorded`` lacks it), joined by ``; ``; empty when none differs.

    Example
    -------
    >>> setting_differences({"seed": 1, "lr": 0.001}, {"seed": 2, "lr": 0.001, "l_energy_w": 1.0})
    'seed 1, now 2; l_energy_w not recorded, now 1.0'
    """
    return "; ".join(
        f"{key} {recorded.get(key, NOT_RECORDED)}, now {value}"
        for key, value in now.items()
        if recorded.get(key, NOT_RECORDED) != value
    )


def recorded_settings(path, keys):
    r"""``{key: value}`` of the top-level ``key: value`` lines of a run's settings file, for ``keys`` (``setting_value``).

    Example
    -------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as file:
    ...     _ = file.write("l_energy_w: 0.0  # energy term\nsparsity_gate: False\nmodules:\n  psi: x\n")
    >>> recorded_settings(file.name, ("l_energy_w", "sparsity_gate", "lr"))
    {'l_energy_w': 0.0, 'sparsity_gate': False}
    >>> os.remove(file.name)
    """
    found = {}
    with open(path, encoding="utf-8") as file:
        for line in file:
            key, colon, value = line.partition(":")
            if colon and key in keys:
                found[key] = setting_value(value.split(" #")[0].strip())
    return found


def setting_value(text):
    """A scalar setting's value from its text, so that ``1``, ``1.0`` and ``1e0`` compare equal.

    Example
    -------
    >>> setting_value("1e0"), setting_value("True"), setting_value("'mean_spectrum'"), setting_value(""), setting_value("null")
    (1.0, True, 'mean_spectrum', None, None)
    """
    words = {"true": True, "false": False, "null": None, "none": None, "~": None, "": None}
    if text.lower() in words:
        return words[text.lower()]
    try:
        return float(text)
    except ValueError:
        return text.strip("'\"")


def check_overlap_type(hparams):
    """Raises for an ``overlap_type`` (``eval.py``'s contamination of the test clips) that is not one of ``OVERLAP_TYPES``."""
    if hparams["overlap_type"] is not None and hparams["overlap_type"] not in OVERLAP_TYPES:
        raise ValueError(
            f"overlap_type={hparams['overlap_type']!r}; accepted values are {OVERLAP_TYPES} (or null for none)."
        )


def _looks_local(path):
    """True for paths meant as local files: absolute, relative to ``.``/``~``, or under an existing folder."""
    return os.path.isabs(path) or path.startswith((".", "~")) or os.path.isdir(path.split("/")[0])


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
