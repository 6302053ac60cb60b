"""The tables and words of an evaluation: metrics files, the comparison of methods with its warnings in
plain words, and the listening report of the test clips.
"""

import json
import logging
import math
import os

from lmac.listening import AUDIBLE_GAIN_DB
from lmac.methods import AllOnesMask, EmptyMask
from lmac.metrics import SILENT_ENERGY_SHARE
from lmac.reporting.report import write_report
from lmac.scoring import COLLAPSE_SILENT_SHARE, described_classes, measure_names, write_per_class

logger = logging.getLogger(__name__)


# Masks whose classes' mean frequency profiles are this similar are called class-agnostic in a comparison.
CLASS_AGNOSTIC_PROFILE_COSINE = 0.95


# A method whose median SIR gain is under this plays the rest about as loud as the decided sound: said in words.
NO_AUDIBLE_GAIN_DB = 1.0


# Where a mask exactly on the event keeps the decision on fewer clips than this, a comparison says so in words.
EVENT_ALONE_FID_IN = 0.75


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


def comparison_markdown(table, class_notes=()):
    """The comparison as a markdown table: a row per method, a column per metric; then, as a list, what
    ``comparison_warnings`` says about the methods and the ``class_notes`` (``silent_class_words``).

    Example
    -------
    >>> print(comparison_markdown({"lmac": {"AI": 50.0, "AD": 1.25}}))
    | method | AI | AD |
    |---|---|---|
    | lmac | 50 | 1.25 |
    """
    columns = [column for column in measure_names("comparison") if any(column in row for row in table.values())]
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for method, row in table.items():
        cells = [f"{row[column]:.4g}" if column in row else "" for column in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    warnings = [*comparison_warnings(table), *class_notes]
    return "\n".join([*lines, *([""] if warnings else []), *(f"- {warning}" for warning in warnings)])


def comparison_warnings(table):
    """Plain words about the methods of a comparison whose numbers describe interpretations one cannot trust:
    mostly near-silent ones, and masks with one frequency profile for every class (the reference rows apart).

    Example
    -------
    >>> for warning in comparison_warnings({"ig": {"silent_share": 1.0, "profile_cosine": 0.2},
    ...                                      "cam": {"silent_share": 0.0, "profile_cosine": 0.99}}):
    ...     print(warning)
    ig: 100% of its interpretations are near-silent (under 1% of the input's energy): its SPS and COMP describe masks one cannot hear at the input's level, and it localises at chance.
    cam: its masks have nearly one frequency profile for every class (profile_cosine 0.99): they do not show what tells the classes apart.
    """
    warnings = event_alone_warnings(table)
    for method, row in table.items():
        if method in REFERENCE_ROWS:
            continue
        if row.get("silent_share", 0.0) >= COLLAPSE_SILENT_SHARE:
            warnings.append(near_silent_words(method, row))
        if "sir_gain_db" in row and row["sir_gain_db"] < NO_AUDIBLE_GAIN_DB:
            warnings.append(
                f"{method}: its interpretations play the rest about as loud as the sound that made the decision "
                f"(median SIR gain {row['sir_gain_db']:+.1f} dB, {100 * row.get('sir_gain_6db_share', 0.0):.0f}% of "
                f"the clips at {AUDIBLE_GAIN_DB:.0f} dB or more{ideal_words(row)}): listening to them does not pick "
                "out that sound."
            )
        if row.get("profile_cosine", 0.0) >= CLASS_AGNOSTIC_PROFILE_COSINE:
            warnings.append(
                f"{method}: its masks have nearly one frequency profile for every class (profile_cosine "
                f"{row['profile_cosine']:.2f}): they do not show what tells the classes apart."
                + class_agnostic_sensitivity_words(row)
            )
    return warnings


def silent_class_words(method, per_class_stats, class_names):
    """Plain words naming the classes whose interpretations by ``method`` are mostly near-silent
    (``silent_share`` at least ``COLLAPSE_SILENT_SHARE``) and, where the decided sound is known, mostly unheard
    against it too (``unheard_share``), with what keeps their decisions; empty when there is none.

    A method's mean can hide them: a listener hears next to nothing of those classes, and where the reference
    alone keeps their decisions the classifier gives them to the reference itself. A class near-silent only by the
    input's measure (a quiet event in loud noise, played) is not named.

    Arguments
    ---------
    method : str
    per_class_stats : dict of int to dict
        A method's per-class measures, by class index.
    class_names : list of str
        By class index.

    Example
    -------
    >>> stats = {0: {"fid_in": 1.0, "silent_share": 0.75, "empty_keeps_decision": 0.875},
    ...          1: {"fid_in": 1.0, "silent_share": 0.0}, 2: {"fid_in": 1.0, "silent_share": 0.75, "unheard_share": 0.0}}
    >>> print(silent_class_words("lmac", stats, ["kick", "snare", "hihat"])[0])
    lmac: a listener hears next to nothing of 1 class(es), whose interpretations are mostly near-silent: kick (Fid-In 1.00, 75% near-silent; the reference alone keeps 88% of its decisions). Where the reference alone keeps a class's decisions, the classifier gives that class to the reference itself, and its decisions need nothing of the clip.
    >>> silent_class_words("lmac", {1: stats[1], 2: stats[2]}, ["kick", "snare", "hihat"])
    []
    """
    silent = [
        label
        for label, stats in per_class_stats.items()
        if stats.get("silent_share", 0.0) >= COLLAPSE_SILENT_SHARE
        and stats.get("unheard_share", 1.0) >= COLLAPSE_SILENT_SHARE
    ]
    if not silent:
        return []
    return [
        f"{method}: a listener hears next to nothing of {len(silent)} class(es), whose interpretations are mostly "
        f"near-silent: {described_classes(silent, per_class_stats, class_names)}. Where the reference alone keeps a "
        "class's decisions, the classifier gives that class to the reference itself, and its decisions need nothing "
        "of the clip."
    ]


def near_silent_words(method, row):
    """The warning of a method whose interpretations are mostly near-silent by the input's measure; where the
    listening measures hear most of them against the decided sound (``target_kept`` is in the row), how quietly
    they play it.

    Example
    -------
    >>> print(near_silent_words("ig", {"silent_share": 1.0, "target_kept": 0.05, "sir_gain_db": 27.0}))
    ig: 100% of its interpretations are near-silent (under 1% of the input's energy): its SPS and COMP describe masks one cannot hear at the input's level, and it localises at chance. Turned up, most play the decided sound (5% of its energy, -13 dB, median SIR gain +27.0 dB): read its listening measures at that level.
    """
    words = (
        f"{method}: {100 * row['silent_share']:.0f}% of its interpretations are near-silent (under "
        f"{100 * SILENT_ENERGY_SHARE:.0f}% of the input's energy): its SPS and COMP describe masks one cannot hear "
        "at the input's level, and it localises at chance."
    )
    if "target_kept" not in row or row["target_kept"] <= 0:
        return words
    return (
        f"{words} Turned up, most play the decided sound ({100 * row['target_kept']:.0f}% of its energy, "
        f"{10 * math.log10(row['target_kept']):+.0f} dB, median SIR gain {row['sir_gain_db']:+.1f} dB): read its "
        "listening measures at that level."
    )


def ideal_words(row):
    """``, where the ideal binary mask gains N dB`` for a row with ``ideal_mask_sir_gain_db``; empty otherwise."""
    if "ideal_mask_sir_gain_db" not in row:
        return ""
    return f", where the ideal binary mask gains {row['ideal_mask_sir_gain_db']:+.1f} dB"


def class_agnostic_sensitivity_words(row):
    """The words added to a class-agnostic method's warning when the classifier's own sensitivity has one frequency
    profile too (``sensitivity_profile_cosine`` at least ``CLASS_AGNOSTIC_PROFILE_COSINE``); empty otherwise.

    Example
    -------
    >>> print(class_agnostic_sensitivity_words({"sensitivity_profile_cosine": 0.97}))
     The classifier's own sensitivity has one too (sensitivity_profile_cosine 0.97): its decision moves most with the same bands for every class, so masks learnt from it keep those bands.
    >>> class_agnostic_sensitivity_words({"sensitivity_profile_cosine": 0.4}), class_agnostic_sensitivity_words({})
    ('', '')
    """
    cosine = row.get("sensitivity_profile_cosine", 0.0)
    if cosine < CLASS_AGNOSTIC_PROFILE_COSINE:
        return ""
    return (
        f" The classifier's own sensitivity has one too (sensitivity_profile_cosine {cosine:.2f}): its decision moves "
        "most with the same bands for every class, so masks learnt from it keep those bands."
    )


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


def write_comparison(table, folder, condition, class_notes=()):
    """Writes ``comparison_<condition>.json`` and ``.md`` (with ``class_notes`` under its table) in ``folder``;
    returns the markdown."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"comparison_{condition}.json"), "w", encoding="utf-8") as file:
        json.dump({"condition": condition, "methods": table}, file, indent=2)
    markdown = comparison_markdown(table, class_notes)
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
                **target_entries(folder, clip, record),
            }
        )
    return write_report(folder, rows, stats, title=title, links=links, warnings=evaluation_warnings(stats))


def target_entries(folder, clip, record):
    """The report row's ``target`` and ``sir_gain_db`` of a saved clip that has a ``target.wav``; none otherwise."""
    if not os.path.isfile(os.path.join(folder, "test", clip, "target.wav")):
        return {}
    return {"target": f"test/{clip}/target.wav", "sir_gain_db": record.get("sir_gain_db")}


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


# The reference rows of every comparison: a mask that removes everything and one that keeps everything.
REFERENCE_ROWS = (EmptyMask.name, AllOnesMask.name)
