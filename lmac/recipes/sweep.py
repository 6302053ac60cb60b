"""How robust the interpretations are: the whole pipeline over several seeds and classifier families (``make sweep``).

For each seed, the synthetic data of that seed (``make_synthetic_data.generate``);
for each family, a classifier, L-MAC on it and a comparison with Grad-CAM and
integrated gradients (``eval.py --compare``), each run with that seed. It
writes, in ``<output_folder>/sweep_<fold>.json`` and ``.md``:

- per family, seed and class: the classifier's accuracy and L-MAC's Fid-In,
  AD, ``silent_share`` and localisation;
- per family and seed: L-MAC's, Grad-CAM's and integrated gradients' means
  (Fid-In, AD, localisation, ``profile_cosine``, ``randomisation_similarity``)
  and L-MAC's worst class;
- per family: the mean and spread over seeds, and the classes that fail the
  robustness targets (``ROBUST_CLASS``) on some seed.

- per family, condition (``--conditions``: the clean fold, WHAM!'s held-out
  noise at 0 dB, a clip of another class at 0 dB) and method: the listening
  measures (the registry's ``listening`` view), their mean and spread over seeds and the worst seed.

``--esc50_folder`` (with ``--wham_folder``) runs every seed on that data set
instead of the seed's synthetic one: a set of real recordings
(``make_real_set.py``), with ``--n_classes`` its number of classes.

``--fold valid`` scores the validation fold (fold 4) instead of the test fold:
settings are chosen there. A finished step is not run again (its output is
kept), so a second ``--fold`` or a new ``--variant`` reuses the data and the
classifiers. ``--variant NAME --lmac_flags "--flag value ..."`` trains
another L-MAC beside the default one (``lmac_NAME/``); ``--classifier_epochs`` and ``--lmac_epochs``
replace every family's epochs (``FAMILY_RUNS``).

    python sweep.py [--seeds 1 2 3 4 5] [--families cnn14 ecapa] [--fold test|valid] [--conditions clean wham]
    python sweep.py --esc50_folder data/drums --wham_folder data/synthetic/wham_noise --n_classes 5 --families cnn14
"""

import argparse
import functools
import json
import logging
import os
import shlex
import statistics
import subprocess
import sys

import lmac.recipes.demo as demo
import lmac.recipes.eval as lmac_eval
import lmac.recipes.train_lmac as train_lmac
from lmac import REPOSITORY
from lmac.checks import SettingError
from lmac.cli import run_script
from lmac.data.synthetic import generate
from lmac.listening import AUDIBLE_GAIN_DB
from lmac.scoring import MEASURES, measure_names

logger = logging.getLogger(__name__)

# Each family's classifier width and epochs, and L-MAC's epochs on it: classifiers of useful accuracy on the
# demo's data (CNN14 and ECAPA as the demo trains them).
FAMILY_RUNS = {
    "cnn14": {"width": 1 / 16, "classifier_epochs": 10, "lmac_epochs": 6},
    "ecapa": {"width": 1 / 16, "classifier_epochs": 10, "lmac_epochs": 3},
    "conv2d": {"width": 1 / 8, "classifier_epochs": 30, "lmac_epochs": 6},
    "vit": {"width": 1 / 16, "classifier_epochs": 30, "lmac_epochs": 6},
}
COMPARED = ("lmac", "gradcam", "integrated_gradients")
MEANS = (
    "fid_in",
    "AD",
    "localization",
    "silent_share",
    "profile_cosine",
    "randomisation_similarity",
    "randomisation_floor",
)
# What a seed's table says of the classifier itself (the same for every method): what the event alone keeps of its
# decisions, and whether its own sensitivity has one frequency profile for every class.
CLASSIFIER_MEASURES = ("event_fid_in", "sensitivity_profile_cosine")
PER_CLASS = (
    "acc",
    "fid_in",
    "AD",
    "silent_share",
    "localization",
    "event_fid_in",
    "empty_keeps_decision",
    "event_silent_share",
)
# A class the classifier gets right on at least ``min_acc`` of its clips must keep Fid-In and stay audible on every seed.
ROBUST_CLASS = {"min_acc": 0.75, "min_fid_in": 0.75, "max_silent_share": 0.25}
# The conditions a comparison runs in (``--conditions``): ``eval.py``'s flags of each, given the seed's data.
CONDITIONS = {
    "clean": lambda data: [],
    "wham": demo.wham_flags,
    "class_mixtures": lambda data: ["--overlap_type", "class_mixtures"],
}
# The folds scored: ``eval.py`` reads the chosen fold as its test fold.
FOLD_FLAGS = {
    "test": [],
    "valid": ["--train_fold_nums", "[1, 2, 3]", "--valid_fold_nums", "[5]", "--test_fold_nums", "[4]"],
}


def parse_args(argv):
    """The sweep's own settings; the rest are ``demo.py``'s (data size, batch size, ``--lmac_lr``, ...)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_folder", default="results/sweep")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--families", nargs="+", default=["cnn14", "ecapa"], choices=list(FAMILY_RUNS))
    parser.add_argument("--fold", default="test", choices=list(FOLD_FLAGS))
    parser.add_argument("--variant", default="", help="a name for --lmac_flags: L-MAC goes to lmac_<variant>/")
    parser.add_argument("--lmac_flags", default="", help="more flags of train_lmac.py for this variant")
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("--esc50_folder", default=None, help="a data set of its own for every seed (real recordings)")
    parser.add_argument("--wham_folder", default=None, help="the WHAM!-format noise of --esc50_folder")
    parser.add_argument(
        "--classifier_epochs",
        type=int,
        default=None,
        help="the classifiers' epochs (default: each family's, FAMILY_RUNS)",
    )
    parser.add_argument(
        "--lmac_epochs",
        type=int,
        default=None,
        help="L-MAC's epochs (default: each family's, FAMILY_RUNS)",
    )
    own, rest = parser.parse_known_args(argv)
    return own, demo.parse_args(rest)


def run_folder(output_folder, seed, family):
    """Where one seed's runs of one family go: ``<output_folder>/seed<seed>/<family>``."""
    return os.path.join(output_folder, f"seed{seed}", family)


def seed_args(demo_args, output_folder, seed, family, classifier_epochs=None, lmac_epochs=None):
    """``demo.py``'s settings for one seed and family: its folder, seed, width and epochs (the classifier's
    ``classifier_epochs`` and L-MAC's ``lmac_epochs`` when given, else the family's)."""
    runs = FAMILY_RUNS[family]
    return argparse.Namespace(
        **{
            **vars(demo_args),
            "output_folder": run_folder(output_folder, seed, family),
            "seed": seed,
            "width": runs["width"],
            "classifier_epochs": classifier_epochs or runs["classifier_epochs"],
            "lmac_epochs": lmac_epochs or runs["lmac_epochs"],
        }
    )


def family_flags(args, family):
    """``--classifier_family`` and ``--width`` of the seed's runs of ``family``."""
    return ["--classifier_family", family, "--width", str(args.width)]


@functools.cache
def code_version():
    """The commit of the code that runs (``git rev-parse HEAD`` in the repository, asked once per run), or None
    outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPOSITORY, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout.strip()


def step_record_path(done_file):
    """Where the flags of the step that wrote ``done_file`` are kept: ``<done_file>.sweep.json``."""
    return f"{done_file}.sweep.json"


def finished_with(done_file, flags):
    """True when the step that writes ``done_file`` has finished with ``flags``, False when it has not finished.

    A finished step records its flags and the code's commit beside ``done_file``
    (``record_step``). One finished with other flags (``computed_flags``: those
    that only say how to run are not compared) is refused in one line, so a
    table never mixes runs of different settings; one made by other code, or
    before the sweep recorded its flags, is reused with a warning that says so.

    Raises
    ------
    lmac.checks.SettingError
        The step finished with other flags: the line names them and the fix.
    """
    if not os.path.isfile(done_file):
        return False
    path = step_record_path(done_file)
    if not os.path.isfile(path):
        logger.warning(
            "Reusing %s, made before the sweep recorded its flags: it may come from other settings.", done_file
        )
        return True
    record = read_json(path)
    if computed_flags(record["flags"]) != computed_flags(flags):
        raise SettingError(
            f"{done_file} was made with other flags ({flag_differences(record['flags'], flags)}); pass another "
            "--output_folder, or delete that run to make it again."
        )
    if record["code"] != code_version():
        logger.warning("Reusing %s, made by the code at commit %s (now %s).", done_file, record["code"], code_version())
    return True


def flag_differences(made, wanted):
    """The flags whose values differ between two lists of ``--key value`` flags, as words.

    Example
    -------
    >>> flag_differences(["--seed", "1", "--ig_steps", "2"], ["--seed", "1", "--ig_steps", "3", "--lr", "0.1"])
    '--ig_steps 2, now 3; --lr none, now 0.1'
    """
    made, wanted = computed_flags(made), computed_flags(wanted)
    keys = sorted(key for key in {*made, *wanted} if made.get(key) != wanted.get(key))
    return "; ".join(f"{key} {made.get(key, 'none')}, now {wanted.get(key, 'none')}" for key in keys)


# Flags that say how a step runs, not what it computes: a run made with other values is the same run.
RUN_ONLY_FLAGS = ("--num_workers", "--noise_num_workers")


def computed_flags(flags):
    """``flag_values`` of ``flags`` without the ``RUN_ONLY_FLAGS``: what a finished step is compared on.

    Example
    -------
    >>> computed_flags(["--seed", "1", "--num_workers", "0"]) == computed_flags(["--num_workers", "1", "--seed", "1"])
    True
    """
    return {key: value for key, value in flag_values(flags).items() if key not in RUN_ONLY_FLAGS}


def flag_values(flags):
    """``{--key: value}`` of a list of ``--key value`` flags (the last value of a key repeated; a flag without a value: '')."""
    values, key = {}, None
    for item in flags:
        if item.startswith("--"):
            key = item
            values[key] = ""
        elif key is not None:
            values[key] = item
    return values


def record_step(done_file, flags):
    """Records ``flags`` and the code's commit beside ``done_file``, which the step has just written."""
    with open(step_record_path(done_file), "w", encoding="utf-8") as file:
        json.dump({"flags": list(flags), "code": code_version()}, file, indent=2)


def classifier_export(args, data, family):
    """Trains the seed's classifier of ``family`` unless it has finished with the same flags; returns the export folder."""
    export = os.path.join(demo.classifier_folder(args), "export")
    flags = demo.classifier_flags(args, data, family_flags(args, family))
    done = os.path.join(export, "classifier.ckpt")
    if not finished_with(done, flags):
        demo.train_the_classifier(args, data, family_flags(args, family))
        record_step(done, flags)
    return export


def lmac_recipe(variant):
    """The folder of an L-MAC run in a seed's family folder: ``lmac`` or ``lmac_<variant>``."""
    return f"lmac_{variant}" if variant else "lmac"


def lmac_run_flags(args, data, export, family, variant):
    """The flags of the seed's L-MAC run of ``family`` (in ``lmac_recipe(variant)``)."""
    flags = demo.interpreter_flags(args, data, export, lmac_recipe(variant), family_flags(args, family))
    return [*flags, "--lr", str(args.lmac_lr)]


def train_lmac_once(args, data, flags, extra_flags, output_folder):
    """Trains L-MAC with ``flags`` unless its run in ``output_folder`` has finished with them (``test_per_class.json``)."""
    every_flag = [
        *flags,
        *extra_flags,
        "--number_of_epochs",
        str(args.lmac_epochs),
        *demo.wham_flags(data),
    ]
    done = os.path.join(output_folder, "test_per_class.json")
    if not finished_with(done, every_flag):
        train_lmac.main([demo.LMAC_HPARAMS, *every_flag])
        record_step(done, every_flag)


def compare_on_fold(args, flags, extra_flags, fold, output_folder, data, conditions=("clean",)):
    """``eval.py --compare`` of ``COMPARED`` on ``fold`` in each of ``conditions`` (``CONDITIONS``), into
    ``output_folder``'s ``eval_<fold>/``; returns that folder."""
    eval_folder = os.path.join(output_folder, f"eval_{fold}")
    for condition in conditions:
        every_flag = [
            *flags,
            *extra_flags,
            *FOLD_FLAGS[fold],
            "--eval_folder",
            eval_folder,
            "--compare",
            ",".join(COMPARED),
            "--ig_steps",
            str(args.ig_steps),
            *CONDITIONS[condition](data),
        ]
        done = os.path.join(eval_folder, f"comparison_{condition}.json")
        if not finished_with(done, every_flag):
            lmac_eval.main([demo.LMAC_HPARAMS, *every_flag])
            record_step(done, every_flag)
    return eval_folder


def read_json(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def seed_results(eval_folder, conditions=("clean",)):
    """One seed's results from its comparisons: per method (of ``COMPARED``, those compared) the ``MEANS``, per class L-MAC's ``PER_CLASS`` (clean),
    and per condition and method (the reference rows too) the measures of the ``listening`` view (``scoring.measure_names``) it has."""
    table = read_json(os.path.join(eval_folder, "comparison_clean.json"))["methods"]
    per_class = read_json(os.path.join(eval_folder, "clean", "metrics_clean_per_class.json"))
    means = {
        method: {key: table[method][key] for key in MEANS if key in table[method]}
        for method in COMPARED
        if method in table
    }
    classes = {name: {key: stats[key] for key in PER_CLASS if key in stats} for name, stats in per_class.items()}
    classifier = {key: table["lmac"].get(key) for key in CLASSIFIER_MEASURES}
    classifier["classifier_acc"] = read_json(os.path.join(eval_folder, "clean", "metrics_clean.json")).get("acc")
    listening = {}
    for condition in conditions:
        rows = read_json(os.path.join(eval_folder, f"comparison_{condition}.json"))["methods"]
        listening[condition] = {
            method: {key: row[key] for key in measure_names("listening") if key in row} for method, row in rows.items()
        }
    return {"methods": means, "classes": classes, "listening": listening, **classifier}


def failing_classes(classes):
    """The classes of one seed that fail ``ROBUST_CLASS``: right on enough clips, but Fid-In too low or too silent.

    Example
    -------
    >>> failing_classes({"a": {"acc": 1.0, "fid_in": 0.125, "silent_share": 0.875}, "b": {"acc": 0.5, "fid_in": 0.0, "silent_share": 1.0}})
    ['a']
    """
    return [
        name
        for name, stats in classes.items()
        if stats["acc"] >= ROBUST_CLASS["min_acc"]
        and (stats["fid_in"] < ROBUST_CLASS["min_fid_in"] or stats["silent_share"] > ROBUST_CLASS["max_silent_share"])
    ]


def with_reasons(name, stats):
    """A class's name, with in brackets the share of its decisions that the event alone keeps (``event_fid_in``,
    when the run had event boxes) and that the reference alone keeps (``empty_keeps_decision``), and the share of
    its clips whose event box itself is near-silent (``event_silent_share``).

    Example
    -------
    >>> with_reasons("a", {"event_fid_in": 0.125, "empty_keeps_decision": 1.0, "event_silent_share": 0.375})
    'a (event alone 0.12, R alone 1.00, event near-silent 0.38)'
    >>> with_reasons("b", {})
    'b'
    """
    reasons = [
        f"{words} {stats[key]:.2f}"
        for key, words in (
            ("event_fid_in", "event alone"),
            ("empty_keeps_decision", "R alone"),
            ("event_silent_share", "event near-silent"),
        )
        if key in stats
    ]
    return f"{name} ({', '.join(reasons)})" if reasons else name


def worst_class(classes):
    """The class of the lowest L-MAC Fid-In among those the classifier gets right on ``min_acc`` of its clips.

    Example
    -------
    >>> worst_class({"a": {"acc": 1.0, "fid_in": 0.5}, "b": {"acc": 0.9, "fid_in": 0.25}, "c": {"acc": 0.2, "fid_in": 0.0}})
    ('b', 0.25)
    """
    known = {name: stats["fid_in"] for name, stats in classes.items() if stats["acc"] >= ROBUST_CLASS["min_acc"]}
    if not known:
        return None, float("nan")
    name = min(known, key=known.get)
    return name, known[name]


def mean_and_spread(values):
    """``(mean, sample standard deviation)`` of a list (spread 0 for one value).

    Example
    -------
    >>> mean_and_spread([1.0, 3.0])
    (2.0, 1.4142135623730951)
    """
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def family_summary(seeds):
    """Mean and spread over seeds of each method's ``MEANS``, each seed's worst class and failing classes."""
    summary = {"methods": {}, "worst_class": {}, "failing_classes": {}}
    for method in COMPARED:
        keys = [key for key in MEANS if all(key in result["methods"][method] for result in seeds.values())]
        summary["methods"][method] = {
            key: mean_and_spread([result["methods"][method][key] for result in seeds.values()]) for key in keys
        }
    for seed, result in seeds.items():
        summary["worst_class"][seed] = worst_class(result["classes"])
        summary["failing_classes"][seed] = failing_classes(result["classes"])
    return summary


def listening_markdown(seeds):
    """Per condition, a table of each method's measures of the ``listening`` view over the seeds: mean ± spread, and the worst
    seed's value (the lowest, the highest for a measure where lower is better, ``scoring.MEASURES``), over the
    seeds that have one (named when not all: a seed whose interpretations are mostly unheard has no gain).

    Example
    -------
    >>> seeds = {"1": {"listening": {"wham": {"ig": {"sir_gain_db": 4.0}}}}, "2": {"listening": {"wham": {"ig": {}}}}}
    >>> lines = listening_markdown(seeds)
    >>> header, row = lines[2].split(" | "), next(line for line in lines if line.startswith("| ig")).split(" | ")
    >>> row[header.index("sir_gain_db")], len(row) == len(header), set(row[1:-1]) - {"4 ± 0; 4 (1 of 2 seeds)"}
    ('4 ± 0; 4 (1 of 2 seeds)', True, {'-'})
    """
    lines, keys = [], measure_names("listening")
    conditions = next(iter(seeds.values())).get("listening", {})
    for condition in conditions:
        methods = list(next(iter(seeds.values()))["listening"][condition])
        lines += [
            f"Listening, {condition} (mean ± spread; worst seed):",
            "",
            "| method | " + " | ".join(keys) + " |",
        ]
        lines.append("|---" * (len(keys) + 1) + "|")
        for method in methods:
            cells = []
            for key in keys:
                values = [seed["listening"][condition][method].get(key) for seed in seeds.values()]
                values = [value for value in values if value is not None]
                if not values:
                    cells.append("-")
                    continue
                mean, spread = mean_and_spread(values)
                worst = max(values) if MEASURES[key].better == "lower" else min(values)
                some = f" ({len(values)} of {len(seeds)} seeds)" if len(values) < len(seeds) else ""
                cells.append(f"{mean:.3g} ± {spread:.2g}; {worst:.3g}{some}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    if lines:
        lines.append(
            f"sir_gain_db: the median over clips of how much louder the decided sound is than the rest in the "
            f"interpretation than in the input (0 for the all-ones mask); sir_gain_6db_share: the share of clips at "
            f"{AUDIBLE_GAIN_DB:.0f} dB or more (an unheard interpretation counts as below); unheard_share: the share of "
            "clips whose interpretation plays under 1% of the decided sound's energy (silent_share is judged against "
            "the whole input instead; where more than half are unheard, the medians of the heard ones are left out); "
            "ideal_mask_sir_gain_db: "
            "the ideal binary mask's gain, what a mask can reach on those clips; other_class_sir_gain_db: with two "
            "classes mixed, the gain of a class-conditional method's interpretation of the class not decided, that "
            "class's sound as the target; clean_sir_gain_db: with noise mixed in, the gain of the whole clean clip, its "
            "own background included, over the noise."
        )
        lines.append("")
    return lines


def summary_markdown(results, fold):
    """The sweep as markdown: per family a table of means and spreads, each seed's worst and failing classes, then
    the listening tables (``listening_markdown``)."""
    lines = [f"# Sweep on the {fold} fold", ""]
    for family, seeds in results.items():
        summary = family_summary(seeds)
        lines += [f"## {family} ({len(seeds)} seeds: {', '.join(seeds)})", "", "| method | " + " | ".join(MEANS) + " |"]
        lines.append("|---" * (len(MEANS) + 1) + "|")
        for method, values in summary["methods"].items():
            cells = [f"{values[key][0]:.3g} ± {values[key][1]:.2g}" if key in values else "" for key in MEANS]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "| seed | classifier acc | "
            + " | ".join(CLASSIFIER_MEASURES)
            + " | L-MAC worst class (Fid-In) | classes failing the targets |",
            "|---" * (len(CLASSIFIER_MEASURES) + 4) + "|",
        ]
        for seed, result in seeds.items():
            accuracy = "-" if result.get("classifier_acc") is None else f"{result['classifier_acc']:.2f}"
            measures = " | ".join(
                "-" if result.get(key) is None else f"{result[key]:.2f}" for key in CLASSIFIER_MEASURES
            )
            name, fid_in = summary["worst_class"][seed]
            failing = ", ".join(
                with_reasons(name, result["classes"][name]) for name in summary["failing_classes"][seed]
            )
            failing = failing or "none"
            lines.append(f"| {seed} | {accuracy} | {measures} | {name} ({fid_in:.2f}) | {failing} |")
        lines.append("")
        lines += listening_markdown(seeds)
    lines.append(
        f"A class fails when the classifier is right on >= {ROBUST_CLASS['min_acc']} of its clips but L-MAC's "
        f"Fid-In is under {ROBUST_CLASS['min_fid_in']} or its silent_share over {ROBUST_CLASS['max_silent_share']}. "
        "In brackets, the share of its decisions that a mask exactly on the event keeps (event_fid_in, a perfect "
        "localiser's Fid-In; where it is low, the classifier does not decide that class from its event alone) and "
        "that the reference R alone keeps (empty_keeps_decision; where it is high, the empty mask is already "
        "faithful for that class, so the sparsest faithful mask is silent), and the share of its clips whose event box "
        "itself keeps under 1% of the energy (event_silent_share, the silent_share of a perfect localiser). "
        "sensitivity_profile_cosine near 1: the classifier's own decision moves most with the same bands for every "
        "class, so masks learnt from it keep those bands."
    )
    if any("| - |" in line or line.endswith("| - |") for line in lines):
        lines += [
            "",
            "A '-' marks a value no seed has: a median of the heard clips of a method whose interpretations are "
            "mostly unheard, or a measure these runs did not record.",
        ]
    return "\n".join(lines) + "\n"


def seed_data(own, demo_args, seed):
    """The data of one seed: ``--esc50_folder`` and ``--wham_folder`` when given, else the seed's synthetic set."""
    if own.esc50_folder is not None:
        if own.wham_folder is None:
            raise ValueError(
                "--esc50_folder needs --wham_folder: the WHAM!-format noise that training and the wham condition mix in."
            )
        return {"esc50_folder": own.esc50_folder, "wham_folder": own.wham_folder}
    return generate(
        os.path.join(own.output_folder, f"seed{seed}", "data"),
        demo_args.n_classes,
        demo_args.clips_per_class,
        tuple(demo_args.noise_files),
        seed,
        demo_args.background_rms,
    )


def main(argv=None):
    """Runs the sweep and writes ``sweep_<fold>[_<variant>].json`` and ``.md``; returns the results."""
    own, demo_args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    extra_flags = shlex.split(own.lmac_flags)
    results = {family: {} for family in own.families}
    for seed in own.seeds:
        data = seed_data(own, demo_args, seed)
        for family in own.families:
            logger.info("Sweep: seed %d, %s.", seed, family)
            args = seed_args(demo_args, own.output_folder, seed, family, own.classifier_epochs, own.lmac_epochs)
            export = classifier_export(args, data, family)
            flags = lmac_run_flags(args, data, export, family, own.variant)
            lmac_folder = os.path.join(args.output_folder, lmac_recipe(own.variant))
            train_lmac_once(args, data, flags, extra_flags, lmac_folder)
            eval_folder = compare_on_fold(args, flags, extra_flags, own.fold, lmac_folder, data, own.conditions)
            results[family][str(seed)] = seed_results(eval_folder, own.conditions)
    name = f"sweep_{own.fold}" + (f"_{own.variant}" if own.variant else "")
    with open(os.path.join(own.output_folder, f"{name}.json"), "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2)
    markdown = summary_markdown(results, own.fold)
    with open(os.path.join(own.output_folder, f"{name}.md"), "w", encoding="utf-8") as file:
        file.write(markdown)
    logger.info("Sweep (%s), also in %s:\n%s", name, os.path.join(own.output_folder, f"{name}.md"), markdown)
    return results


def command_line():
    """What the script runs: ``main`` on the command line's arguments (a refused run ends in one line)."""
    run_script(main, sys.argv[1:])
