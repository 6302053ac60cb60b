#!/usr/bin/env python3
"""Evaluates a trained L-MAC interpreter, or interprets your own sound files.

The test fold, clean, in-domain (WHAM!'s held-out ``tt`` noise) or out-of-domain (``docs/method.md``)::

    python eval.py hparams/lmac_cnn14.yaml --data_folder /data/ESC50 \
        --pretrained_interpreter path/psi_model.ckpt \
        [--add_wham_noise True --wham_folder W | --overlap_type mixtures|white_noise|speech [--speech_folder S]]

Your own files (anything libsndfile opens, whatever its name; any rate, channels and length)::

    python eval.py hparams/lmac_cnn14.yaml --pretrained_interpreter path/psi_model.ckpt \
        --single_sample my.wav | --interpret_folder my_sounds/

Another interpretation method, or all of them compared on the same clips
(``mask_methods.py``; ``l2i`` reads the run of ``train_nmf.py`` and ``train_l2i.py``
``hparams/l2i_cnn14.yaml`` in ``--l2i_folder``, on the same classifier)::

    python eval.py hparams/lmac_cnn14.yaml --data_folder /data/ESC50 --int_method gradcam
    python eval.py hparams/lmac_cnn14.yaml --data_folder /data/ESC50 \
        --compare lmac,saliency,smoothgrad,integrated_gradients,gradcam,l2i   # or --compare all

Results go to ``eval_folder`` (``<output_folder>/eval``): metrics as JSON and
a markdown table, listenable interpretations, pictures and ``report.html``;
a comparison adds ``comparison_<condition>.md`` and ``.json``.
Without ``--pretrained_interpreter`` the run's best checkpoint is used.
"""

import glob
import json
import logging
import os
import sys
import time

import numpy as np
import soundfile as sf
import speechbrain as sb
import torch

from audio_io import read_audio_mono
from device_runtime import end_distributed_run, set_weight_layout
from esc50_prepare import LABEL_ENCODER_FILE, prepare_datasets
from interpretation_metrics import SILENT_ENERGY_SHARE, TRUST_METRICS, load_event_table
from interpreter_brain import COLLAPSE_SILENT_SHARE, write_per_class
from listening_report import write_report
from lmac_interpreter import LMACInterpreter, class_names_from_encoder, output_names
from mask_methods import MASK_METHODS, AllOnesMask, EmptyMask
from recipe_setup import (
    build_mask_reference,
    check_overlap_type,
    load_classifier,
    log_empty_mask_decision,
    named_class_count,
    note_class_count,
    run_script,
    start_recipe,
    validate_data_hparams,
)
from train_lmac import LMAC
from wham_prepare import combine_batches, fit_length, make_noise_stream

logger = logging.getLogger(__name__)

METHODS = tuple(MASK_METHODS)
COMPARISON_COLUMNS = (
    "AI", "AD", "AG", "FF", "fid_in", "SPS", "COMP", "localization", "event_fid_in", *TRUST_METRICS,
    "seconds_per_clip",
)  # fmt: skip
# Masks whose classes' mean frequency profiles are this similar are called class-agnostic in a comparison.
CLASS_AGNOSTIC_PROFILE_COSINE = 0.95
# Where a mask exactly on the event keeps the decision on fewer clips than this, a comparison says so in words.
EVENT_ALONE_FID_IN = 0.75
# The reference rows of every comparison: a mask that removes everything and one that keeps everything.
REFERENCE_ROWS = (EmptyMask.name, AllOnesMask.name)
AUDIO_EXTENSIONS = tuple(sorted({".wav", ".flac", ".ogg", *(f".{kind.lower()}" for kind in sf.available_formats())}))


class ClipOverlap:
    """Contaminates clips with other recordings: ``0.8 s/||s|| + 0.2 u/||u||``, peak-normalised.

    ``u`` is a random file of ``paths``, mono, resampled, a random excerpt
    of the clip's length or zero-padded to it. Draws come from one generator
    seeded once, so a run is reproducible.

    Arguments
    ---------
    paths : list of str
    sample_rate : int
    seed : int
    """

    def __init__(self, paths, sample_rate, seed):
        if not paths:
            raise ValueError("ClipOverlap needs at least one recording to mix in.")
        self.paths = list(paths)
        self.sample_rate = sample_rate
        self.rng = np.random.default_rng(seed)

    def other_clip(self, num_samples):
        """A random excerpt (or zero-padded recording) of ``num_samples``, shape ``[num_samples]``."""
        recording = read_audio_mono(self.paths[self.rng.integers(len(self.paths))], self.sample_rate)
        start = int(self.rng.integers(max(recording.shape[0] - num_samples, 0) + 1))
        return fit_length(recording[start:], num_samples)

    def mix_into(self, clean):
        """``clean`` ``[batch, samples]`` contaminated as the class docstring says."""
        others = torch.stack([self.other_clip(clean.shape[1]) for _ in range(clean.shape[0])]).to(clean.device)
        return combine_batches(clean, others, clean_weight=0.8, noise_weight=0.2)


class WhiteNoiseOverlap:
    """Contaminates clips with Gaussian noise: ``s/||s|| + 0.5 n/||n||``, peak-normalised.

    Arguments
    ---------
    seed : int
        Seeds the one generator of the run.
    """

    def __init__(self, seed):
        self.generator = torch.Generator().manual_seed(seed)

    def mix_into(self, clean):
        """``clean`` ``[batch, samples]`` with white noise mixed in."""
        noise = torch.randn(clean.shape, generator=self.generator).to(clean.device)
        return combine_batches(clean, noise, clean_weight=1.0, noise_weight=0.5)


def audio_files(folder):
    """Sorted paths of the audio files in ``folder`` (recursively): those libsndfile opens, whatever
    their extension (``.oga``, ``.opus``, ...), and those named as audio (``.wav``, ``.flac``, ...).

    A file named as audio that does not open stays in the list, so that it is
    reported as failed; other files are named in a warning and left alone.
    """
    paths = sorted(path for path in glob.glob(os.path.join(glob.escape(folder), "**", "*"), recursive=True) if os.path.isfile(path))
    audio = [path for path in paths if path.lower().endswith(AUDIO_EXTENSIONS) or opens_as_audio(path)]
    others = sorted(set(paths) - set(audio))
    if others:
        logger.warning("Not audio files, left alone: %s", ", ".join(others))
    return audio


def opens_as_audio(path):
    """True when libsndfile recognises the content of ``path`` as audio."""
    try:
        sf.info(path)
    except (RuntimeError, OSError):  # soundfile's LibsndfileError is a RuntimeError
        return False
    return True


def make_overlap(hparams, test_set):
    """The contamination of the evaluation: WHAM!'s held-out ``tt`` noise, an out-of-domain overlap, or None."""
    overlap_type = hparams["overlap_type"]
    if overlap_type is None:
        return make_noise_stream(hparams, split="tt")
    if overlap_type == "white_noise":
        return WhiteNoiseOverlap(hparams["seed"])
    if overlap_type == "mixtures":
        with test_set.output_keys_as(["wav"]):
            paths = [item["wav"] for item in test_set]
        return ClipOverlap(paths, hparams["sample_rate"], hparams["seed"])
    return ClipOverlap(audio_files(hparams["speech_folder"]), hparams["sample_rate"], hparams["seed"])


def evaluation_condition(hparams):
    """Name of what the test clips are mixed with: ``clean``, ``wham`` or the overlap type."""
    if hparams["overlap_type"] is not None:
        return hparams["overlap_type"]
    return "wham" if hparams["add_wham_noise"] else "clean"


def validate_eval_hparams(hparams):
    """Raises before any work for settings that cannot work, naming the setting and the fix."""
    check_overlap_type(hparams)
    overlap_type = hparams["overlap_type"]
    if overlap_type is not None and hparams["add_wham_noise"]:
        raise ValueError("Choose one contamination: --add_wham_noise True or --overlap_type, not both.")
    validate_data_hparams(hparams)
    if overlap_type == "speech":
        folder = hparams["speech_folder"]
        if not folder or not audio_files(folder):
            raise FileNotFoundError(
                f"overlap_type=speech needs --speech_folder with speech recordings ({', '.join(AUDIO_EXTENSIONS)}); "
                f"found none in {folder!r}. LJSpeech's wavs/ folder works."
            )
    if hparams["single_sample"] is not None and hparams["interpret_folder"] is not None:
        raise ValueError("Give --single_sample or --interpret_folder, not both.")
    if hparams["single_sample"] is not None and not os.path.isfile(hparams["single_sample"]):
        raise FileNotFoundError(f"single_sample={hparams['single_sample']!r} does not exist.")
    if hparams["interpret_folder"] is not None and not os.path.isdir(hparams["interpret_folder"]):
        raise FileNotFoundError(f"interpret_folder={hparams['interpret_folder']!r} is not a folder.")
    for method in methods_of(hparams):
        MASK_METHODS[method].check_settings(hparams)


def methods_of(hparams):
    """The interpretation methods of the run: ``compare`` (a list, ``a,b,c`` or ``all``: every method that
    applies to the classifier's family) or ``[int_method]``.

    Raises
    ------
    ValueError
        An unknown method, naming it and the accepted ones.
    """
    compare = hparams["compare"]
    methods = [hparams["int_method"]] if not compare else compare
    if methods == "all":
        return [name for name in METHODS if MASK_METHODS[name].applies_to(hparams)]
    if isinstance(methods, str):
        methods = [name.strip() for name in methods.split(",") if name.strip()]
    unknown = [name for name in methods if name not in METHODS]
    if unknown or not methods:
        setting = "compare" if compare else "int_method"
        raise ValueError(f"{setting}={hparams[setting]!r}: unknown method(s) {unknown}; accepted: {', '.join(METHODS)}.")
    return list(dict.fromkeys(methods))


def write_metrics(stats, folder, condition, per_class_stats=None, class_names=None):
    """Writes ``metrics_<condition>.json`` and ``metrics_<condition>.md`` (and, given ``per_class_stats``,
    ``metrics_<condition>_per_class.json``, keyed by ``class_names``); returns the first two paths."""
    os.makedirs(folder, exist_ok=True)
    if per_class_stats is not None:
        write_per_class(per_class_stats, class_names, os.path.join(folder, f"metrics_{condition}_per_class.json"))
    json_path = os.path.join(folder, f"metrics_{condition}.json")
    with open(json_path, "w", encoding="utf-8") as file:
        json.dump({"condition": condition, **stats}, file, indent=2)
    markdown_path = os.path.join(folder, f"metrics_{condition}.md")
    rows = [f"| {name} | {value:.4g} |" for name, value in stats.items()]
    with open(markdown_path, "w", encoding="utf-8") as file:
        file.write(f"Test fold, {condition}\n\n| metric | value |\n|---|---|\n" + "\n".join(rows) + "\n")
    return json_path, markdown_path


def evaluate_test_fold(hparams, run_opts, datasets, method, events=None, mask_reference=None):
    """Runs TEST with one method; writes metrics (overall and per class), interpretations and the report;
    returns the stats.

    ``method`` (a built ``MaskMethod``) writes to its ``results_folder``
    under ``eval_folder``, in a folder named after the condition. The stats
    include ``seconds_per_clip`` and, with ``events`` (``meta/events.csv``),
    ``localization``. Every method sees the same contamination (a fresh
    stream of the same seed) and the same ``mask_reference``.
    """
    condition = evaluation_condition(hparams)
    folder = os.path.join(method.results_folder(hparams["eval_folder"]), condition)
    brain = make_brain(
        {**hparams, "interpretations_folder": folder}, run_opts, method,
        noise_stream=make_overlap(hparams, datasets["test"]), events=events, mask_reference=mask_reference,
    )  # fmt: skip
    start = time.perf_counter()
    brain.evaluate(datasets["test"], test_loader_kwargs=hparams["test_dataloader_options"])
    stats = dict(brain.last_stage_stats)
    stats["seconds_per_clip"] = (time.perf_counter() - start) / max(1, len(datasets["test"]))
    class_names = class_names_of(hparams)
    write_metrics(stats, folder, condition, brain.per_class_stats, class_names)
    title = f"{method.title} on the test fold ({condition})"
    report_test_interpretations(folder, stats, title, class_names)
    return stats


def build_method(hparams, name):
    """The ``MaskMethod`` named ``name``, built on the run's models (loading its own weights, if any)."""
    return MASK_METHODS[name].from_hparams(hparams, hparams["modules"])


def build_methods(hparams, names):
    """``build_method`` of each of ``names``, once each: a dict of str to ``MaskMethod``, in their order."""
    return {name: build_method(hparams, name) for name in names}


def make_brain(hparams, run_opts, method, noise_stream=None, events=None, mask_reference=None):
    """An ``LMAC`` brain whose masks are ``method``'s (a built ``MaskMethod``), its weights laid out for it.

    The models are the configuration's, already loaded (``load_classifier``, ``build_methods``).
    """
    brain = LMAC(
        modules=hparams["modules"], hparams=hparams, run_opts=run_opts,
        mask_method=method, noise_stream=noise_stream, events=events, mask_reference=mask_reference,
    )  # fmt: skip
    set_weight_layout(brain.modules, forward_only=method.forward_only)
    return brain


def compare_methods(hparams, run_opts, datasets, methods, events=None, mask_reference=None):
    """Evaluates every method on the same test clips; writes and logs the comparison table.

    Arguments
    ---------
    methods : dict of str to MaskMethod
        ``build_methods``' methods, the ``REFERENCE_ROWS`` among them.

    Returns
    -------
    dict of str to dict
        Per method, the ``COMPARISON_COLUMNS`` it has.
    """
    table = {}
    for name, method in methods.items():
        logger.info("Comparison: evaluating %s.", name)
        stats = evaluate_test_fold(hparams, run_opts, datasets, method, events, mask_reference)
        table[name] = {column: stats[column] for column in COMPARISON_COLUMNS if column in stats}
    condition = evaluation_condition(hparams)
    markdown = write_comparison(table, hparams["eval_folder"], condition)
    logger.info("Comparison on the test fold (%s):\n%s", condition, markdown)
    return table


def comparison_markdown(table):
    """The comparison as a markdown table: a row per method, a column per metric; then, as a list, what
    ``comparison_warnings`` says about the methods.

    Example
    -------
    >>> print(comparison_markdown({"lmac": {"AI": 50.0, "AD": 1.25}}))
    | method | AI | AD |
    |---|---|---|
    | lmac | 50 | 1.25 |
    """
    columns = [column for column in COMPARISON_COLUMNS if any(column in row for row in table.values())]
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for method, row in table.items():
        cells = [f"{row[column]:.4g}" if column in row else "" for column in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    warnings = comparison_warnings(table)
    return "\n".join([*lines, *([""] if warnings else []), *(f"- {warning}" for warning in warnings)])


def comparison_warnings(table):
    """Plain words about the methods of a comparison whose numbers describe interpretations one cannot trust:
    mostly near-silent ones, and masks with one frequency profile for every class (the reference rows apart).

    Example
    -------
    >>> for warning in comparison_warnings({"ig": {"silent_share": 1.0, "profile_cosine": 0.2},
    ...                                      "cam": {"silent_share": 0.0, "profile_cosine": 0.99}}):
    ...     print(warning)
    ig: 100% of its interpretations are near-silent (under 1% of the input's energy): its SPS and COMP describe masks one cannot hear, and it localises at chance.
    cam: its masks have nearly one frequency profile for every class (profile_cosine 0.99): they do not show what tells the classes apart.
    """
    warnings = event_alone_warnings(table)
    for method, row in table.items():
        if method in REFERENCE_ROWS:
            continue
        if row.get("silent_share", 0.0) >= COLLAPSE_SILENT_SHARE:
            warnings.append(
                f"{method}: {100 * row['silent_share']:.0f}% of its interpretations are near-silent (under "
                f"{100 * SILENT_ENERGY_SHARE:.0f}% of the input's energy): its SPS and COMP describe masks one "
                "cannot hear, and it localises at chance."
            )
        if row.get("profile_cosine", 0.0) >= CLASS_AGNOSTIC_PROFILE_COSINE:
            warnings.append(
                f"{method}: its masks have nearly one frequency profile for every class (profile_cosine "
                f"{row['profile_cosine']:.2f}): they do not show what tells the classes apart."
            )
    return warnings


def event_alone_warnings(table):
    """Plain words when a mask exactly on the event (``event_fid_in``, the same for every method) keeps the
    decision on fewer than ``EVENT_ALONE_FID_IN`` of the clips; empty otherwise.

    Example
    -------
    >>> event_alone_warnings({"lmac": {"event_fid_in": 0.6}, "gradcam": {"event_fid_in": 0.6}})
    ['A mask exactly on the event keeps the decision on 60% of the clips (event_fid_in): the classifier does not decide from the event alone there, so a faithful mask keeps more than the event and its localisation is lower.']
    >>> event_alone_warnings({"lmac": {"event_fid_in": 0.9}}), event_alone_warnings({"lmac": {}})
    ([], [])
    """
    shares = [row["event_fid_in"] for row in table.values() if "event_fid_in" in row]
    if not shares or shares[0] >= EVENT_ALONE_FID_IN:
        return []
    return [
        f"A mask exactly on the event keeps the decision on {100 * shares[0]:.0f}% of the clips (event_fid_in): the "
        "classifier does not decide from the event alone there, so a faithful mask keeps more than the event and "
        "its localisation is lower."
    ]


def write_comparison(table, folder, condition):
    """Writes ``comparison_<condition>.json`` and ``.md`` in ``folder``; returns the markdown."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"comparison_{condition}.json"), "w", encoding="utf-8") as file:
        json.dump({"condition": condition, "methods": table}, file, indent=2)
    markdown = comparison_markdown(table)
    with open(os.path.join(folder, f"comparison_{condition}.md"), "w", encoding="utf-8") as file:
        file.write(f"Test fold, {condition}: interpretation methods compared\n\n{markdown}\n")
    return markdown


def report_test_interpretations(folder, stats, title, class_names, links=()):
    """Writes ``<folder>/report.html`` for the clips saved under ``<folder>/test/<clip>/``; returns its path.

    Each row names the clip's true class and the classifier's prediction with
    its probability (from the clip's ``clip.json``), by ``class_names``, the
    interpretation's ``energy_kept``, and a warning in plain words when it is
    near-silent or when an empty mask already gets the clip's decision
    (``trust_notes``); ``links`` are ``write_report``'s.
    """
    rows = []
    for clip in sorted(os.listdir(os.path.join(folder, "test"))):
        with open(os.path.join(folder, "test", clip, "clip.json"), encoding="utf-8") as file:
            record = json.load(file)
        rows.append(
            {
                "name": clip,
                "label": class_names[record["label"]],
                "prediction": f"{class_names[record['prediction']]} ({record['probability']:.2f})",
                "energy_kept": record["energy_kept"],
                "notes": trust_notes(record, class_names),
                "input": f"test/{clip}/original.wav",
                "interpretation": f"test/{clip}/interpretation.wav",
                "image": f"test/{clip}/spectrogram.png",
            }
        )
    return write_report(folder, rows, stats, title=title, links=links, warnings=evaluation_warnings(stats))


def evaluation_warnings(stats):
    """Plain-words warnings about a whole evaluation from its ``stats``: collapsed (mostly near-silent) masks.

    Example
    -------
    >>> evaluation_warnings({"silent_share": 0.75, "fid_in": 0.2})
    ['75% of the interpretations are near-silent: the masks have collapsed towards the empty mask (Fid-In 0.20). Listen before trusting any metric here.']
    >>> evaluation_warnings({"silent_share": 0.1, "fid_in": 1.0}), evaluation_warnings(None)
    ([], [])
    """
    if not stats or stats.get("silent_share", 0.0) < COLLAPSE_SILENT_SHARE:
        return []
    return [
        f"{100 * stats['silent_share']:.0f}% of the interpretations are near-silent: the masks have collapsed towards "
        f"the empty mask (Fid-In {stats['fid_in']:.2f}). Listen before trusting any metric here."
    ]


def trust_notes(record, class_names):
    """Plain-words warnings about one clip's interpretation (its ``clip.json`` record); empty when there is none.

    Example
    -------
    >>> record = {"prediction": 0, "energy_kept": 0.002, "empty_decision": 0, "empty_probability": 0.8}
    >>> for note in trust_notes(record, ["kick", "snare"]):
    ...     print(note)
    Near-silent: the interpretation keeps 0.2% of the input's energy.
    This classifier gives kick to an empty mask (silence or the reference) with probability 0.80: keeping kick does not show that this mask holds its evidence.
    """
    notes = []
    if record["energy_kept"] < SILENT_ENERGY_SHARE:
        notes.append(f"Near-silent: the interpretation keeps {100 * record['energy_kept']:.1f}% of the input's energy.")
    if record["empty_decision"] == record["prediction"]:
        name = class_names[record["prediction"]]
        notes.append(
            f"This classifier gives {name} to an empty mask (silence or the reference) with probability "
            f"{record['empty_probability']:.2f}: keeping {name} does not show that this mask holds its evidence."
        )
    return notes


def class_names_of(hparams):
    """Class names by index from the run's label encoder, or ``class_<i>`` when there is none."""
    path = os.path.join(hparams["save_folder"], LABEL_ENCODER_FILE)
    count = named_class_count(hparams)
    if not os.path.isfile(path):
        logger.warning("No %s: classes are reported by index.", path)
        return class_names_from_encoder(None, count)
    encoder = sb.dataio.encoder.CategoricalEncoder()
    encoder.load(path)
    return class_names_from_encoder(encoder, count)


def interpret_files(hparams, run_opts, paths, method):
    """Interprets every file with ``method`` (a built ``MaskMethod``), skipping (and naming) the ones that fail;
    writes the report.

    Outputs go to ``<results_folder>/files`` of the method.

    Returns
    -------
    list of str
        The files that could not be interpreted.
    """
    folder = os.path.join(method.results_folder(hparams["eval_folder"]), "files")
    os.makedirs(folder, exist_ok=True)
    interpreter = make_file_interpreter(hparams, run_opts, method)
    rows, failed = [], []
    for path, name in zip(paths, output_names(paths)):
        try:
            result = interpreter.interpret_file(path, savedir=folder, keep_tensors=False, name=name)
        except (RuntimeError, OSError, ValueError) as error:
            logger.error("Could not interpret %s: %s", path, error)
            failed.append(path)
            continue
        rows.append(
            {
                "name": os.path.basename(path),
                **{kind: os.path.basename(result.outputs[kind]) for kind in ("input", "interpretation", "image")},
                "prediction": f"{result.labels[0]} ({result.probabilities.max().item():.2f})",
                "timeline": result.timeline,
            }
        )
    write_report(folder, rows, None, title=f"{method.title} interpretations")
    logger.info("Interpreted %d files into %s; %d failed.", len(rows), folder, len(failed))
    return failed


def make_file_interpreter(hparams, run_opts, method):
    """The ``LMACInterpreter`` of the run's (loaded) models, with ``method``'s masks, its weights laid out for it."""
    interpreter = LMACInterpreter(
        modules=hparams["modules"], hparams=hparams, run_opts=run_opts,
        mask_method=method, class_names=class_names_of(hparams),
    )  # fmt: skip
    set_weight_layout(interpreter.mods, forward_only=method.forward_only)
    return interpreter


def files_mode_needs_no_data(argv):
    """``("data_folder",)`` when ``argv`` interprets one's own files (``--single_sample``, ``--interpret_folder``).

    Example
    -------
    >>> files_mode_needs_no_data(["h.yaml", "--single_sample", "my.wav"]), files_mode_needs_no_data(["h.yaml"])
    (('data_folder',), ())
    """
    flags = {arg.split("=", 1)[0] for arg in argv}
    return ("data_folder",) if flags & {"--single_sample", "--interpret_folder"} else ()


def main(argv):
    """Evaluates on the test fold (one method, or a comparison), or interprets files; returns the files that failed."""
    hparams_file, hparams, run_opts, overrides = start_recipe(argv, placeholders_not_needed=files_mode_needs_no_data(argv))
    validate_eval_hparams(hparams)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"], hyperparams_to_save=hparams_file, overrides=overrides
    )
    names = methods_of(hparams)
    if hparams["single_sample"] is not None or hparams["interpret_folder"] is not None:
        paths = [hparams["single_sample"]] if hparams["single_sample"] else audio_files(hparams["interpret_folder"])
        load_classifier(hparams)
        return interpret_files(hparams, run_opts, paths, build_method(hparams, names[0]))
    datasets, label_encoder = prepare_datasets(hparams)
    note_class_count(hparams, label_encoder)
    load_classifier(hparams)
    mask_reference = build_mask_reference(hparams, datasets["train"])
    log_empty_mask_decision(hparams, class_names_of(hparams), mask_reference)
    events = load_event_table(hparams["data_folder"])  # read once, used by every method
    if hparams["compare"]:
        methods = build_methods(hparams, dict.fromkeys([*names, *REFERENCE_ROWS]))
        compare_methods(hparams, run_opts, datasets, methods, events, mask_reference)
    else:
        evaluate_test_fold(hparams, run_opts, datasets, build_method(hparams, names[0]), events, mask_reference)
    end_distributed_run()
    return []


if __name__ == "__main__":
    sys.exit(1 if run_script(main, sys.argv[1:]) else 0)
