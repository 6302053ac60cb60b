"""Evaluates a trained L-MAC interpreter, or interprets your own sound files.

The test fold, clean, in-domain (WHAM!'s held-out ``tt`` noise) or out-of-domain (``docs/method.md``)::

    python eval.py hparams/lmac_cnn14.yaml --data_folder /data/ESC50 \
        --pretrained_interpreter path/psi_model.ckpt \
        [--add_wham_noise True --wham_folder W | --overlap_type mixtures|white_noise|speech [--speech_folder S]]

Your own files (anything libsndfile opens, whatever its name; any rate, channels and length)::

    python eval.py hparams/lmac_cnn14.yaml --pretrained_interpreter path/psi_model.ckpt \
        --single_sample my.wav | --interpret_folder my_sounds/

Another interpretation method, or all of them compared on the same clips
(``lmac/methods.py``; ``l2i`` reads the run of ``train_nmf.py`` and ``train_l2i.py``
``hparams/l2i_cnn14.yaml`` in ``--l2i_folder``, on the same classifier)::

    python eval.py hparams/lmac_cnn14.yaml --data_folder /data/ESC50 --int_method gradcam
    python eval.py hparams/lmac_cnn14.yaml --data_folder /data/ESC50 \
        --compare lmac,saliency,smoothgrad,integrated_gradients,gradcam,l2i   # or --compare all

Results go to ``eval_folder`` (``<output_folder>/eval``): metrics as JSON and
a markdown table, listenable interpretations, pictures and ``report.html``;
a comparison adds ``comparison_<condition>.md`` and ``.json``. The evaluation's
own ``hyperparams.yaml``, ``log.txt`` and ``eval_log.txt`` (the stage lines) go
there too: the trained run's configuration and training log stay as they were.
Without ``--pretrained_interpreter`` the run's best checkpoint is used.
"""

import logging
import os
import sys
import time

import speechbrain as sb
from speechbrain.utils.train_logger import FileTrainLogger

from lmac.checks import check_overlap_type, settings_checked, validate_data_hparams
from lmac.cli import run_script, start_recipe
from lmac.data.contamination import AUDIO_EXTENSIONS, audio_files, make_overlap
from lmac.data.esc50 import LABEL_ENCODER_FILE
from lmac.inference import LMACInterpreter, class_names_from_encoder, output_names
from lmac.loading import (
    load_classifier,
    mask_reference_with_its_decision,
    named_class_count,
    open_interpreter_data,
)
from lmac.methods import MASK_METHODS
from lmac.metrics import load_event_table
from lmac.reporting.comparison import (
    REFERENCE_ROWS,
    report_test_interpretations,
    silent_class_words,
    write_comparison,
    write_metrics,
)
from lmac.reporting.report import write_report
from lmac.scoring import ClassifierScores, measure_names
from lmac.training.device import end_distributed_run, set_weight_layout
from lmac.training.lmac import LMAC

logger = logging.getLogger(__name__)

METHODS = tuple(MASK_METHODS)


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
        raise ValueError(
            f"{setting}={hparams[setting]!r}: unknown method(s) {unknown}; accepted: {', '.join(METHODS)}."
        )
    return list(dict.fromkeys(methods))


def evaluate_test_fold(hparams, run_opts, datasets, method, events=None, mask_reference=None, classifier_scores=None):
    """Runs TEST with one method; writes metrics (overall and per class), interpretations and the report;
    returns the stats and the per-class stats (by class index).

    ``method`` (a built ``MaskMethod``) writes to its ``results_folder``
    under ``eval_folder``, in a folder named after the condition. The stats
    include ``seconds_per_clip`` and, with ``events`` (``meta/events.csv``),
    ``localization``. Every method sees the same contamination (a fresh
    stream of the same seed) and the same ``mask_reference``; ``classifier_scores`` (``scoring.ClassifierScores``)
    keeps the scores that depend only on the classifier and the clip for the next method.
    """
    condition = evaluation_condition(hparams)
    folder = os.path.join(method.results_folder(hparams["eval_folder"]), condition)
    brain = make_brain(
        {**hparams, "interpretations_folder": folder},
        run_opts,
        method,
        noise_stream=make_overlap(hparams, datasets["test"]),
        events=events,
        mask_reference=mask_reference,
        classifier_scores=classifier_scores,
    )
    start = time.perf_counter()
    brain.evaluate(datasets["test"], test_loader_kwargs=hparams["test_dataloader_options"])
    stats = dict(brain.last_stage_stats)
    stats["seconds_per_clip"] = (time.perf_counter() - start) / max(1, len(datasets["test"]))
    class_names = class_names_of(hparams)
    write_metrics(stats, folder, condition, brain.per_class_stats, class_names)
    title = f"{method.title} on the test fold ({condition})"
    report_test_interpretations(folder, stats, title, class_names)
    return stats, brain.per_class_stats


def build_method(hparams, name):
    """The ``MaskMethod`` named ``name``, built on the run's models (loading its own weights, if any)."""
    return MASK_METHODS[name].from_hparams(hparams, hparams["modules"])


def build_methods(hparams, names):
    """``build_method`` of each of ``names``, once each: a dict of str to ``MaskMethod``, in their order."""
    return {name: build_method(hparams, name) for name in names}


def make_brain(hparams, run_opts, method, noise_stream=None, events=None, mask_reference=None, classifier_scores=None):
    """An ``LMAC`` brain whose masks are ``method``'s (a built ``MaskMethod``), its weights laid out for it.

    The models are the configuration's, already loaded (``load_classifier``, ``build_methods``).
    """
    brain = LMAC(
        modules=hparams["modules"],
        hparams=hparams,
        run_opts=run_opts,
        mask_method=method,
        noise_stream=noise_stream,
        events=events,
        mask_reference=mask_reference,
        classifier_scores=classifier_scores,
    )
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
        Per method, the measures of the comparison (``scoring.measure_names``) it has.
    """
    shared = ClassifierScores()
    stats, class_notes, class_names = {}, [], class_names_of(hparams)
    # The reference rows first: their pass computes the scores every method shares, so that the methods'
    # seconds_per_clip count their own work.
    for name in sorted(methods, key=lambda name: name not in REFERENCE_ROWS):
        logger.info("Comparison: evaluating %s.", name)
        stats[name], per_class = evaluate_test_fold(
            hparams, run_opts, datasets, methods[name], events, mask_reference, shared
        )
        if name not in REFERENCE_ROWS:
            class_notes += silent_class_words(name, per_class, class_names)
    columns = measure_names("comparison")
    table = {name: {column: stats[name][column] for column in columns if column in stats[name]} for name in methods}
    condition = evaluation_condition(hparams)
    markdown = write_comparison(table, hparams["eval_folder"], condition, class_notes)
    logger.info("Comparison on the test fold (%s):\n%s", condition, markdown)
    return table


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
        modules=hparams["modules"],
        hparams=hparams,
        run_opts=run_opts,
        mask_method=method,
        class_names=class_names_of(hparams),
    )
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
    hparams_file, hparams, run_opts, overrides = start_recipe(
        argv, placeholders_not_needed=files_mode_needs_no_data(argv)
    )
    with settings_checked():  # a bad setting ends here in one line
        validate_eval_hparams(hparams)
        names = methods_of(hparams)
        sb.create_experiment_directory(
            experiment_directory=hparams["eval_folder"], hyperparams_to_save=hparams_file, overrides=overrides
        )
        hparams["train_logger"] = FileTrainLogger(os.path.join(hparams["eval_folder"], "eval_log.txt"))
        interprets_files = hparams["single_sample"] is not None or hparams["interpret_folder"] is not None
        if interprets_files:
            paths = [hparams["single_sample"]] if hparams["single_sample"] else audio_files(hparams["interpret_folder"])
            load_classifier(hparams)
        else:
            datasets, _ = open_interpreter_data(hparams)
    if interprets_files:
        return interpret_files(hparams, run_opts, paths, build_method(hparams, names[0]))
    mask_reference = mask_reference_with_its_decision(hparams, datasets["train"], class_names_of(hparams))
    events = load_event_table(hparams["data_folder"])  # read once, used by every method
    if hparams["compare"]:
        methods = build_methods(hparams, dict.fromkeys([*names, *REFERENCE_ROWS]))
        compare_methods(hparams, run_opts, datasets, methods, events, mask_reference)
    else:
        evaluate_test_fold(hparams, run_opts, datasets, build_method(hparams, names[0]), events, mask_reference)
    end_distributed_run()
    return []


def command_line():
    """What the script runs: ``main`` on the command line's arguments."""
    sys.exit(1 if run_script(main, sys.argv[1:]) else 0)
