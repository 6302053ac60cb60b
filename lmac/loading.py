"""What a recipe loads before its work: the classifier's weights, an L-MAC decoder, an NMF dictionary,
a trained L2I run, and the run's masking reference ``R`` (built once, saved with the run).
"""

import contextlib
import functools
import logging
import os
import random

import numpy as np
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main

from lmac.audio.io import fit_length
from lmac.checks import (
    SettingError,
    check_classifier_outputs,
    check_l2i_folder,
    refuse_another_reference,
    saved_mask_reference_path,
)
from lmac.compat import old_module_names
from lmac.data.esc50 import prepare_datasets
from lmac.features import spectral_features
from lmac.mask_references import load_mask_reference, make_mask_reference, save_mask_reference
from lmac.training.checkpointing import BEST_CHECKPOINT_KEY

logger = logging.getLogger(__name__)


# Above this probability for the class silence gets, empty masks can pass for interpretations of that class.
SILENCE_WARNING_PROBABILITY = 0.5
# How many training clips the start-up probe builds empty mask's inputs from (``probe_log_magnitudes``).
EMPTY_PROBE_CLIPS = 8


def open_interpreter_data(hparams):
    """What every interpreter recipe reads before its work: the data sets, the data's class count
    (``note_class_count``) and the frozen classifier's weights (``load_classifier``).

    The experiment folder before it stays each recipe's own call of
    ``sb.create_experiment_directory``, which copies the file that calls it into the folder.

    Returns
    -------
    datasets : dict of str to DynamicItemDataset
        ``train``, ``valid`` and ``test``.
    label_encoder : speechbrain.dataio.encoder.CategoricalEncoder
    """
    datasets, label_encoder = prepare_datasets(hparams)
    note_class_count(hparams, label_encoder)
    load_classifier(hparams)
    return datasets, label_encoder


def mask_reference_with_its_decision(hparams, train_set, class_names):
    """The run's ``mask_reference`` (``build_mask_reference``), after logging what the classifier decides on its
    empty mask's inputs, built from training clips (``log_empty_mask_decision``)."""
    probe = probe_log_magnitudes(hparams, train_set)
    mask_reference = build_mask_reference(hparams, train_set, probe)
    log_empty_mask_decision(hparams, class_names, mask_reference, probe)
    return mask_reference


def build_mask_reference(hparams, train_set, probe_log_mag=None):
    """The run's ``mask_reference``: the one its save folder holds, else built (``mean_spectrum`` reads the clean
    training clips, ``neutral_spectrum`` also asks the loaded classifier about the first ``EMPTY_PROBE_CLIPS``) and saved there on the main process, so that the run's evaluations use the same ``R``.

    ``probe_log_mag`` is those clips' ``probe_log_magnitudes`` where the caller has read them already; None: read
    here, when a judgement first needs them."""
    path = saved_mask_reference_path(hparams)

    def training_batches():
        loader = sb.dataio.dataloader.make_dataloader(train_set, batch_size=hparams["batch_size"])
        for batch in loader:
            yield batch.sig.data

    def log_magnitude(wavs):
        return spectral_features(wavs, hparams["compute_stft"], hparams["classifier_input"]).log_mag

    probe = functools.cache(  # read once, at the first judgement, unless given
        lambda: probe_log_mag if probe_log_mag is not None else probe_log_magnitudes(hparams, train_set)
    )

    def judge(spectrum):  # [freq] to the logits [clips, n_classes] of the empty inputs it makes from probe clips
        clip_log_mag = probe().to(spectrum.device)
        return classify_empty_inputs(hparams, spectrum.expand_as(clip_log_mag), clip_log_mag)

    def build_and_save_unless_saved():  # on the main process only: True when the run had saved its own already
        if os.path.isfile(path):
            return True
        reference = make_mask_reference(hparams["mask_reference"], training_batches(), log_magnitude, judge)
        save_mask_reference(reference, path)
        return False

    # Every process takes part in the same collectives: whether the file exists is decided on the main process
    # alone, since it may be written there while another process looks.
    was_saved = run_on_main(build_and_save_unless_saved)
    reference = load_mask_reference(path)
    if was_saved:
        refuse_another_reference(hparams, reference.name, path)
        logger.info("mask_reference=%s: the run's own, from %s.", reference.name, path)
    return reference


@torch.no_grad()
def probe_log_magnitudes(hparams, dataset):
    """``log1p|STFT|`` ``[clips, frames, freq]`` of the first ``EMPTY_PROBE_CLIPS`` clips of ``dataset`` (``sig``),
    each cropped or padded to ``signal_length_s``: the clips the start-up probe builds empty inputs from."""
    count = min(EMPTY_PROBE_CLIPS, len(dataset))
    num_samples = round(hparams["signal_length_s"] * hparams["sample_rate"])
    with dataset.output_keys_as(["sig"]):
        wavs = torch.stack([fit_length(dataset[index]["sig"], num_samples) for index in range(count)])
    return spectral_features(wavs, hparams["compute_stft"], hparams["classifier_input"]).log_mag


def classify_empty_inputs(hparams, empty_input, clip_log_mag):
    """The loaded classifier's logits ``[clips, n_classes]`` on empty mask's inputs ``empty_input`` (``R``
    ``[clips, frames, freq]``), each in its clip's normalisation (``clip_log_mag``, the same shape); differentiable
    in ``empty_input``."""
    classifier = hparams["modules"]["classifier"]
    device = next(classifier.parameters()).device
    logits, _ = classifier(hparams["classifier_input"].to(device)(empty_input.to(device), clip_log_mag.to(device)))
    return logits


@torch.no_grad()
def empty_mask_decision(hparams, mask_reference, clip_log_mag):
    """The loaded classifier's decision on an empty mask's input as training builds it: the reference ``R`` filled
    from each clip (a reference made from the clip is that clip's), in that clip's normalisation (a mean-normalised
    input removes the clip's mean, not the mean of ``R`` itself).

    Arguments
    ---------
    hparams : dict
    mask_reference : mask_references.MaskReference
    clip_log_mag : torch.Tensor
        ``[clips, frames, freq]``: ``log1p|STFT|`` of the clips (``probe_log_magnitudes``).

    Returns
    -------
    decision : int
        The class the classifier gives most of the clips' empty inputs.
    probability : float
        The mean probability it gives that class over the clips.
    """
    device = next(hparams["modules"]["classifier"].parameters()).device
    clip_log_mag = clip_log_mag.to(device)
    logits = classify_empty_inputs(hparams, mask_reference.fill(clip_log_mag), clip_log_mag)
    probabilities = torch.softmax(logits.float(), dim=1)
    decision = int(probabilities.argmax(dim=1).mode().values)
    return decision, float(probabilities[:, decision].mean())


def log_empty_mask_decision(hparams, class_names, mask_reference, clip_log_mag):
    """Logs which class the classifier gives an empty mask's input (``R`` of the clips ``clip_log_mag``
    ``[clips, frames, freq]``, ``empty_mask_decision``), with its probability; warns above
    ``SILENCE_WARNING_PROBABILITY``.

    Returns
    -------
    tuple of (str, float)
        The class name and the probability.
    """
    decision, probability = empty_mask_decision(hparams, mask_reference, clip_log_mag)
    name, reference = class_names[decision], mask_reference.name
    logger.info(
        "The classifier gives an empty mask's input (mask_reference=%s, built from %d training clips as training "
        "builds it) class %r with probability %.2f.",
        reference,
        clip_log_mag.shape[0],
        name,
        probability,
    )
    if probability > SILENCE_WARNING_PROBABILITY:
        logger.warning(
            "The classifier gives an empty mask's input (mask_reference=%s) %r with probability %.2f: an empty mask "
            "already keeps that decision, so %r interpretations may be silent. Check energy_kept, silent_share "
            "and fid_in_beyond_empty; the default objective (--l_empty_w 1) asks every mask "
            "to beat its empty input, and another --mask_reference may be less telling to this classifier.",
            reference,
            name,
            probability,
            name,
        )
    return name, probability


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
            "but accuracy is not computed.",
            hparams["n_classes"],
            hparams["data_folder"],
            len(label_encoder),
        )


def load_interpreter(psi_model, path, device):
    """Loads decoder weights (a state dict, e.g. ``psi_model.ckpt``) into ``psi_model``."""
    psi_model.load_state_dict(torch.load(path, map_location=device))
    logger.info("Loaded the interpreter from %s.", path)


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
    with keep_random_state(), old_module_names(path), open(path, encoding="utf-8") as file:
        l2i = load_hyperpyyaml(file)
    for key in ("width", "n_classes"):
        if l2i[key] != hparams[key]:
            raise ValueError(
                f"The L2I run in {folder!r} has {key}={l2i[key]}, but this run has {key}={hparams[key]}; "
                "pass the --l2i_folder of an L2I run on the same classifier."
            )
    if l2i["checkpointer"].find_checkpoint(min_key=BEST_CHECKPOINT_KEY) is None:
        raise FileNotFoundError(
            f"l2i_folder={folder!r} holds no trained L2I checkpoint; run train_l2i.py to the end first."
        )
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


def load_lmac_decoder(hparams):
    """Loads ``pretrained_interpreter``, or the run's best checkpoint, into ``hparams["psi_model"]``."""
    if hparams["pretrained_interpreter"]:
        load_interpreter(hparams["psi_model"], hparams["pretrained_interpreter"], "cpu")
    else:
        hparams["checkpointer"].recover_if_possible(min_key=BEST_CHECKPOINT_KEY)
