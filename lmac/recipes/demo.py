"""The whole L-MAC pipeline on synthetic data, on a CPU, in minutes (``make demo``).

1. writes synthetic ESC-50-format data (events over a pink background loud
   enough that the classifier errs on some clips) and WHAM!-format noise;
2. trains a small (width 1/16) CNN14 classifier with WHAM! augmentation;
3. trains L-MAC on it with WHAM! augmentation;
4. evaluates on the clean test fold, writing listenable interpretations, and
   exports the interpreter for Python (``lmac/export/``,
   ``lmac.inference.LMACInterpreter.from_hparams``);
5. compares with trivial masks (uniform random, all ones) and measures how
   well the masks find each clip's event (``meta/events.csv``);
6. fine-tunes the decoder with the cross-correlation guidance under WHAM!
   (``lmac_finetuned/``) and evaluates base and fine-tuned on the test fold
   with WHAM!'s held-out noise (in domain) and with mixtures (out of domain);
7. learns an NMF dictionary, trains the L2I baseline (``l2i/``) and compares
   L-MAC with L2I and the gradient baselines on the clean test fold
   (``eval.py --compare``, ``lmac/eval/comparison_clean.md``);
8. with ``--second_family ecapa`` (or another family), interprets a
   classifier of that family on the same data (ECAPA-TDNN: 1-D feature
   maps): trains it, trains L-MAC on it and compares every method that
   applies to it (``<family>/lmac/eval/comparison_clean.md``);
9. writes ``report.html`` (the clean test fold, linking every model's
   training curves) and ``<output_folder>/summary.json``, with the seconds
   of each step.

    python demo.py [--output_folder results/demo] [--lmac_epochs 6] ...
"""

import argparse
import contextlib
import json
import logging
import os
import resource
import sys
import time

import speechbrain as sb
import torch

import lmac.recipes.eval as lmac_eval
import lmac.recipes.export_interpreter as export_interpreter
import lmac.recipes.train_classifier as train_classifier
import lmac.recipes.train_l2i as train_l2i
import lmac.recipes.train_lmac as train_lmac
import lmac.recipes.train_nmf as train_nmf
import lmac.reporting.comparison as comparison
from lmac import HPARAMS_FOLDER
from lmac.cli import run_script
from lmac.data.synthetic import generate
from lmac.scoring import MEASURES, ClipScoring, measure_names
from lmac.training.checkpointing import BEST_CHECKPOINT_KEY

logger = logging.getLogger(__name__)

CLASSIFIER_HPARAMS = os.path.join(HPARAMS_FOLDER, "cnn14_classifier.yaml")
LMAC_HPARAMS = os.path.join(HPARAMS_FOLDER, "lmac_cnn14.yaml")
L2I_HPARAMS = os.path.join(HPARAMS_FOLDER, "l2i_cnn14.yaml")
# The synthetic clips' background: loud enough that the classifier errs on some test clips.
DEMO_BACKGROUND_RMS = 0.8
# An interpreter's training run ends without its test pass: the demo evaluates each checkpoint itself, on the
# clean test fold and under each contamination.
UNTESTED = ["--test_after_training", "False"]


def parse_args(argv):
    """Command-line settings of the demo; the defaults fit 2 CPU cores and about 8 minutes."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_folder", default="results/demo")
    parser.add_argument("--data_folder", default="data/synthetic")
    parser.add_argument("--n_classes", type=int, default=10)
    parser.add_argument("--clips_per_class", type=int, default=40)
    parser.add_argument("--noise_files", type=int, nargs=3, default=[40, 10, 10])
    parser.add_argument("--width", type=float, default=1 / 16)
    parser.add_argument("--classifier_epochs", type=int, default=10)
    parser.add_argument("--lmac_epochs", type=int, default=6)
    parser.add_argument("--lmac_lr", type=float, default=0.001)
    parser.add_argument("--finetuning_epochs", type=int, default=2)
    parser.add_argument("--finetuning_lr", type=float, default=0.0002)
    parser.add_argument(
        "--finetuning_crosscor_th",
        type=float,
        default=0.3,
        help="the recipe's 0.6 keeps no clip here: the base masks correlate 0.12 to 0.39 with the clean clips (validation)",
    )
    parser.add_argument("--l2i_epochs", type=int, default=4)
    parser.add_argument("--l2i_lr", type=float, default=0.001)
    parser.add_argument("--nmf_components", type=int, default=100)
    parser.add_argument("--nmf_max_frames", type=int, default=10000)
    parser.add_argument("--ig_steps", type=int, default=16, help="integrated gradients' steps in the comparison")
    parser.add_argument("--smoothgrad_samples", type=int, default=4, help="SmoothGrad's noisy copies in the comparison")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument(
        "--num_workers",
        type=int,
        default=0,
        help="data loading processes; on 2 CPU cores a loading process costs more than it saves (a fork per pass)",
    )
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--background_rms", type=float, default=DEMO_BACKGROUND_RMS, help="events at a lower SNR")
    parser.add_argument(
        "--second_family",
        default="",
        help="another classifier family to interpret after CNN14 (ecapa: about 3 more minutes on 2 cores); '' for none",
    )
    parser.add_argument("--second_width", type=float, default=1 / 16, help="the second family's width")
    parser.add_argument("--second_classifier_epochs", type=int, default=10)
    parser.add_argument("--second_lmac_epochs", type=int, default=3)
    return parser.parse_args(argv)


def wham_flags(data):
    """The flags that mix the WHAM!-format noise of ``data`` (``wham_folder``) into a recipe's clips."""
    return ["--add_wham_noise", "True", "--wham_folder", data["wham_folder"]]


def classifier_folder(args, folder=""):
    """Where ``train_the_classifier`` trains: ``<output_folder>/<folder>/classifier``."""
    return os.path.join(args.output_folder, folder, "classifier")


def classifier_flags(args, data, family_flags=None, folder="", epochs=None):
    """The flags of ``train_the_classifier``'s run (in ``classifier_folder(args, folder)``)."""
    return [
        "--data_folder",
        data["esc50_folder"],
        "--output_folder",
        classifier_folder(args, folder),
        "--n_classes",
        str(args.n_classes),
        "--number_of_epochs",
        str(args.classifier_epochs if epochs is None else epochs),
        "--batch_size",
        str(args.batch_size),
        "--num_workers",
        str(args.num_workers),
        "--noise_num_workers",
        str(args.num_workers),
        *wham_flags(data),
        "--seed",
        str(args.seed),
        *(family_flags or ["--width", str(args.width)]),
    ]


def train_the_classifier(args, data, family_flags=None, folder="", epochs=None):
    """Trains the small classifier (CNN14 at ``width``, or the family and width of ``family_flags``) under
    ``<output_folder>/<folder>``; returns its test accuracy and the exported checkpoint paths."""
    brain = train_classifier.main([CLASSIFIER_HPARAMS, *classifier_flags(args, data, family_flags, folder, epochs)])
    return brain.test_stats["acc"], os.path.join(classifier_folder(args, folder), "export")


def interpret_second_family(args, data):
    """Trains a classifier of ``second_family`` and L-MAC on it, then compares every method that applies to it.

    Returns
    -------
    dict
        ``classifier_acc`` and ``comparison`` (``eval.compare_methods``' table).
    comparison_path : str
        Its markdown table.
    """
    family = args.second_family
    family_flags = ["--classifier_family", family, "--width", str(args.second_width)]
    classifier_acc, export = train_the_classifier(args, data, family_flags, family, args.second_classifier_epochs)
    flags = [
        *interpreter_flags(args, data, export, os.path.join(family, "lmac"), family_flags),
        "--lr",
        str(args.lmac_lr),
    ]
    train_lmac.main(
        [
            LMAC_HPARAMS,
            *flags,
            "--number_of_epochs",
            str(args.second_lmac_epochs),
            *wham_flags(data),
            *UNTESTED,
        ]
    )
    lmac_eval.main(
        [
            LMAC_HPARAMS,
            *flags,
            "--compare",
            "all",
            "--ig_steps",
            str(args.ig_steps),
            "--smoothgrad_samples",
            str(args.smoothgrad_samples),
        ]
    )
    folder = os.path.join(args.output_folder, family, "lmac", "eval")
    with open(os.path.join(folder, "comparison_clean.json"), encoding="utf-8") as file:
        table = json.load(file)["methods"]
    return {"classifier_acc": classifier_acc, "comparison": table}, os.path.join(folder, "comparison_clean.md")


def interpreter_flags(args, data, export, recipe, family_flags=None):
    """Command-line flags of an interpreter recipe (``lmac`` or ``l2i``) on the demo's CNN14 classifier, or on the
    classifier of ``family_flags`` (``--classifier_family`` and ``--width``)."""
    return [
        "--data_folder",
        data["esc50_folder"],
        "--output_folder",
        os.path.join(args.output_folder, recipe),
        *(family_flags or ["--width", str(args.width)]),
        "--n_classes",
        str(args.n_classes),
        "--embedding_model_path",
        os.path.join(export, "embedding_model.ckpt"),
        "--classifier_model_path",
        os.path.join(export, "classifier.ckpt"),
        "--batch_size",
        str(args.batch_size),
        "--num_workers",
        str(args.num_workers),
        "--noise_num_workers",
        str(args.num_workers),
        "--seed",
        str(args.seed),
        "--interpretations_per_stage",
        str(args.n_classes),  # one clip of each class
    ]


def lmac_flags(args, data, export):
    """Command-line flags shared by the L-MAC training and evaluation runs."""
    return [
        *interpreter_flags(args, data, export, "lmac"),
        "--lr",
        str(args.lmac_lr),
        "--l2i_folder",
        os.path.join(args.output_folder, "l2i"),
    ]


def l2i_flags(args, data, export):
    """Command-line flags of the NMF and L2I runs."""
    return [
        *interpreter_flags(args, data, export, "l2i"),
        "--lr",
        str(args.l2i_lr),
        "--nmf_components",
        str(args.nmf_components),
        "--nmf_max_frames",
        str(args.nmf_max_frames),
    ]


def finetuning_flags(args, data, export):
    """Command-line flags of the fine-tuned L-MAC run (``lmac_finetuned/``) and of its evaluations."""
    return [*interpreter_flags(args, data, export, "lmac_finetuned"), "--lr", str(args.finetuning_lr)]


def finetune(args, data, flags, base_decoder):
    """Fine-tunes the trained decoder ``base_decoder`` with the cross-correlation guidance under WHAM!.

    The recipe's guidance settings (``crosscortype``, ``guidelosstype``,
    ``g_w``, ``bin_th``) apply, with ``crosscor_th`` chosen on the validation fold.
    """
    train_lmac.main(
        [
            LMAC_HPARAMS,
            *flags,
            "--finetuning",
            "True",
            "--pretrained_interpreter",
            base_decoder,
            "--number_of_epochs",
            str(args.finetuning_epochs),
            "--crosscor_th",
            str(args.finetuning_crosscor_th),
            *wham_flags(data),
            *UNTESTED,
        ]
    )


def noisy_evaluations(data, runs):
    """Each run's decoder on the test fold with WHAM!'s held-out noise (in domain), with mixtures (out of domain) and
    with a clip of another class at 0 dB (two classes: which of the two sounds the interpretation plays).

    Arguments
    ---------
    data : dict
        ``generate``'s paths.
    runs : dict of str to list
        Name (``base``, ``finetuned``) to the run's flags.

    Returns
    -------
    dict
        ``{"in_domain": {name: {key: value}}, "out_of_domain": {...}, "two_classes": {...}}`` with the measures of the ``noisy`` view (``scoring.measure_names``).
    """
    conditions = {
        "in_domain": ("wham", wham_flags(data)),
        "out_of_domain": ("mixtures", ["--overlap_type", "mixtures"]),
        "two_classes": ("class_mixtures", ["--overlap_type", "class_mixtures"]),
    }
    results = {domain: {} for domain in conditions}
    for name, flags in runs.items():
        output_folder = flags[flags.index("--output_folder") + 1]
        for domain, (condition, extra) in conditions.items():
            lmac_eval.main([LMAC_HPARAMS, *flags, *extra])
            with open(
                os.path.join(output_folder, "eval", condition, f"metrics_{condition}.json"), encoding="utf-8"
            ) as file:
                metrics = json.load(file)
            metrics["localization_ratio"] = metrics.pop("localization")
            results[domain][name] = {key: metrics.get(key) for key in measure_names("noisy")}  # None: no value
    return results


def training_curve_links(args, report_folder):
    """``(text, path)`` of each trained model's ``training_curves.png``, relative to ``report_folder``."""
    runs = {"classifier": "classifier", "L-MAC": "lmac", "fine-tuned L-MAC": "lmac_finetuned", "L2I": "l2i"}
    return [
        (
            f"training curves: {text}",
            os.path.relpath(os.path.join(args.output_folder, run, "training_curves.png"), report_folder),
        )
        for text, run in runs.items()
    ]


class StepTimer:
    """Wall seconds of the demo's steps, by name: ``with timer("classifier"): ...``."""

    def __init__(self):
        self.seconds = {}

    @contextlib.contextmanager
    def __call__(self, name):
        start = time.time()
        yield
        self.seconds[name] = time.time() - start


def compare_interpreters(args, data, export, flags):
    """Learns the NMF dictionary, trains L2I as L-MAC was trained, and compares every method on the test fold.

    Returns
    -------
    table : dict of str to dict
        ``eval.compare_methods``' table, one row per method of ``eval.METHODS``.
    markdown_path : str
    """
    train_nmf.main([L2I_HPARAMS, *l2i_flags(args, data, export)])
    train_l2i.main(
        [
            L2I_HPARAMS,
            *l2i_flags(args, data, export),
            "--number_of_epochs",
            str(args.l2i_epochs),
            *wham_flags(data),
            *UNTESTED,
        ]
    )
    lmac_eval.main(
        [
            LMAC_HPARAMS,
            *flags,
            "--compare",
            ",".join(lmac_eval.METHODS),
            "--ig_steps",
            str(args.ig_steps),
            "--smoothgrad_samples",
            str(args.smoothgrad_samples),
        ]
    )
    folder = os.path.join(args.output_folder, "lmac", "eval")
    with open(os.path.join(folder, "comparison_clean.json"), encoding="utf-8") as file:
        table = json.load(file)["methods"]
    return table, os.path.join(folder, "comparison_clean.md")


def reference_scores(brain, dataset, batch_size, seed):
    """L-MAC's masks against trivial masks, and how well each mask finds the event (the brain's ``event_boxes``).

    Returns
    -------
    dict of str to float
        ``AD_random_mask``, ``AD_all_ones_mask``, their ``AI``/``FF``/``fid_in``
        companions, ``localization_ratio`` of L-MAC and of the trivial masks,
        and ``SPS`` of the trivial masks.
    """
    generator = torch.Generator().manual_seed(seed)
    trivial = ("AD", "AI", "FF", "fid_in", "SPS")
    scores = {}
    loader = sb.dataio.dataloader.make_dataloader(dataset, batch_size=batch_size)
    brain.modules.eval()
    with torch.no_grad():
        for batch in loader:
            output = brain.compute_forward(batch, sb.Stage.TEST)
            masks = {
                "lmac": output.mask,
                "random_mask": torch.rand(output.mask.shape, generator=generator).to(output.mask.device),
                "all_ones_mask": torch.ones_like(output.mask),
            }
            boxes = brain.event_boxes(batch.id, output.mask.shape[1:], output.mask.device)
            for name, mask in masks.items():
                masked = (
                    output
                    if name == "lmac"
                    else brain.masked_output(output.mixed, output.features, output.logits, mask, sb.Stage.TEST)
                )
                clip = ClipScoring(masked, None, None, None, boxes=boxes)
                per_example = {"localization_ratio": MEASURES["localization"].score(clip)}
                if name != "lmac":
                    per_example.update((metric, MEASURES[metric].score(clip)) for metric in trivial)
                for metric, values in per_example.items():
                    scores.setdefault(f"{metric}_{name}", []).append(values.cpu())
    averages = {key: float(torch.cat(values).mean()) for key, values in scores.items()}
    averages["localization_ratio"] = averages.pop("localization_ratio_lmac")
    return averages


def peak_memory_mb():
    """Largest resident set of this process or of any of its children, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def summary_table(summary):
    """The summary's numbers as a two-column markdown table (the nested tables apart)."""
    lines = ["| metric | value |", "|---|---|"]
    for key, value in summary.items():
        if isinstance(value, float):
            lines.append(f"| {key} | {value:.4g} |")
        elif not isinstance(value, dict):
            lines.append(f"| {key} | {value} |")
    return "\n".join(lines)


def summary_measures(stats):
    """L-MAC's measures of the ``summary`` view (``scoring.measure_names``) from its TEST ``stats``: ``{name: value}``,
    None where no clip has a value."""
    return {key: stats.get(key) for key in measure_names("summary")}


def finetuning_table(noisy):
    """``noisy_evaluations``' results as a markdown table: a row per domain and run, a column per measure of the
    ``noisy`` view."""
    keys = measure_names("noisy")
    lines = ["| test fold | L-MAC | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for domain, runs in noisy.items():
        for name, values in runs.items():
            lines.append(
                f"| {domain.replace('_', ' ')} | {name} | "
                + " | ".join("-" if values[key] is None else f"{values[key]:.3g}" for key in keys)
                + " |"
            )
    return "\n".join(lines)


def main(argv=None):
    """Runs the demo and returns the summary dict."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    start, timer = time.time(), StepTimer()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with timer("data"):
        data = generate(
            args.data_folder,
            args.n_classes,
            args.clips_per_class,
            tuple(args.noise_files),
            args.seed,
            args.background_rms,
        )
    with timer("classifier"):
        classifier_acc, export = train_the_classifier(args, data)
    flags = lmac_flags(args, data, export)
    with timer("lmac"):
        train_lmac.main(
            [
                LMAC_HPARAMS,
                *flags,
                "--number_of_epochs",
                str(args.lmac_epochs),
                *wham_flags(data),
                *UNTESTED,
            ]
        )
    with timer("lmac_test_and_export"):
        brain, datasets = train_lmac.main([LMAC_HPARAMS, *flags, "--test_only", "True"])
        export_folder = export_interpreter.main([LMAC_HPARAMS, *flags])
        references = reference_scores(brain, datasets["test"], args.batch_size, args.seed)
    summary = {"classifier_acc": classifier_acc}
    summary.update(summary_measures(brain.last_stage_stats))
    summary.update(references)
    finetuned = finetuning_flags(args, data, export)
    with timer("finetuning"):
        base_decoder = brain.checkpointer.find_checkpoint(min_key=BEST_CHECKPOINT_KEY).paramfiles["psi_model"]
        finetune(args, data, finetuned, str(base_decoder))
    with timer("noisy_evaluations"):
        noisy = noisy_evaluations(data, {"base": flags, "finetuned": finetuned})
    with timer("l2i_and_comparison"):
        table, comparison_path = compare_interpreters(args, data, export, flags)
    second = None
    if args.second_family:
        with timer("second_family"):
            second, second_path = interpret_second_family(args, data)
    folder = brain.hparams.interpretations_folder
    report = comparison.report_test_interpretations(
        folder,
        summary,
        "L-MAC demo: clean test fold",
        lmac_eval.class_names_of(vars(brain.hparams)),
        links=training_curve_links(args, folder),
    )
    summary.update(noisy)
    if second is not None:
        summary["second_family"] = {"family": args.second_family, **second}
    summary["step_seconds"] = timer.seconds
    summary["wall_time_s"] = time.time() - start
    summary["peak_memory_mb"] = peak_memory_mb()
    os.makedirs(args.output_folder, exist_ok=True)
    with open(os.path.join(args.output_folder, "summary.json"), "w", encoding="utf-8") as file:
        json.dump(summary, file, indent=2)
    logger.info("Listen to the interpretations: %s", report)
    logger.info("The interpreter for Python: LMACInterpreter.from_hparams(source=%r, savedir=...)", export_folder)
    logger.info(
        "Demo summary (clean test fold), also in %s:\n%s",
        os.path.join(args.output_folder, "summary.json"),
        summary_table(summary),
    )
    logger.info("Base and fine-tuned L-MAC with noise mixed in:\n%s", finetuning_table(noisy))
    logger.info(
        "Interpretation methods on the clean test fold, from %s:\n%s", comparison_path, read_text(comparison_path)
    )
    if second is not None:
        logger.info(
            "Interpretation methods of the %s classifier (test accuracy %.3f), from %s:\n%s",
            args.second_family,
            second["classifier_acc"],
            second_path,
            read_text(second_path),
        )
    return summary


def read_text(path):
    """The text of the file ``path`` (a comparison's markdown, its words about each method and class included)."""
    with open(path, encoding="utf-8") as file:
        return file.read()


def command_line():
    """What the script runs: ``main`` on the command line's arguments (a bad setting ends it in one line)."""
    run_script(main, sys.argv[1:])
