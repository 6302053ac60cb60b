"""A self-contained HTML page to listen to interpretations: ``report.html``.

Every link is relative to the report's folder, so the folder can be copied
or zipped elsewhere and opened offline.
"""

import html
import os

# What each metric says, and which way is better: (meaning, "higher" | "lower" | "").
METRIC_DESCRIPTIONS = {
    "loss": ("the interpreter's training objective", "lower"),
    "fid_in": ("Fid-In: share of clips whose masked-in input keeps the classifier's decision", "higher"),
    "FF": ("faithfulness: drop of the decision's probability when the mask is removed", "higher"),
    "AI": ("average increase: % of clips whose masked-in input raises the decision's probability", "higher"),
    "AD": ("average drop (%) of the decision's probability on the masked-in input", "lower"),
    "AG": ("average gain (%) of the decision's probability on the masked-in input", "higher"),
    "SPS": ("sparseness: Gini index of the mask (1 = a single cell)", "higher"),
    "COMP": ("complexity: entropy of the mask", "lower"),
    "acc": ("classifier accuracy against the true labels", ""),
    "classifier_acc": ("classifier accuracy against the true labels", ""),
    "in_masks": ("fine-tuning: share of clips whose masked-in input correlates with the clean clip", ""),
    "localization": (
        "mask mass inside the event's box / the box's share (1 = chance, as for a near-silent interpretation)",
        "higher",
    ),
    "localization_ratio": ("mask mass inside the event's box / the box's share (1 = chance)", "higher"),
    "clean_energy_share": (
        "noisy input: mask mass on the clean sound's loud cells / their share (1 = chance)",
        "higher",
    ),
    "seconds_per_clip": ("seconds per clip of the whole evaluation pass", "lower"),
    "energy_kept": ("share of the input's energy the interpretation keeps", ""),
    "silent_share": ("share of clips whose interpretation is near-silent (keeps under 1% of the energy)", "lower"),
    "empty_keeps_decision": ("share of clips whose decision an empty mask (silence or the reference) already gets", ""),
    "fid_in_beyond_empty": (
        "share of clips whose masked-in input keeps the decision and the empty input does not",
        "higher",
    ),
    "profile_cosine": (
        "mean cosine between the classes' mean mask frequency profiles (1 = the same band for every class)",
        "lower",
    ),
    "event_profile_cosine": (
        "profile_cosine of the event boxes themselves: the value of masks exactly on the events",
        "",
    ),
    "sensitivity_profile_cosine": (
        "profile_cosine of the classifier's own sensitivity |d log q_c / d L| at the input, as a mask (1 = its decision moves with the same bands for every class)",
        "",
    ),
    "event_energy_kept": ("share of the input's energy a mask exactly on the event box keeps", ""),
    "event_silent_share": (
        "share of clips whose event box itself keeps under 1% of the input's energy: silent_share a perfect localiser would score",
        "",
    ),
    "event_fid_in": (
        "share of clips whose decision a mask exactly on the event box keeps: a perfect localiser's Fid-In",
        "",
    ),
    "sir_gain_db": (
        "median gain (dB) of the decided sound over the rest, interpretation against input (0 = the all-ones mask; unheard ones not counted)",
        "higher",
    ),
    "sir_gain_6db_share": (
        "share of clips whose interpretation gains at least 6 dB (an unheard one does not)",
        "higher",
    ),
    "target_kept": ("median share of the decided sound's energy that the interpretation plays", "higher"),
    "rest_kept": (
        "median share of the rest's energy (everything but the decided sound) that the interpretation plays",
        "lower",
    ),
    "si_sdr_db": ("median scale-invariant SDR (dB) of the interpretation against the decided sound", "higher"),
    "unheard_share": (
        "share of clips whose interpretation plays under 1% of the decided sound's energy (20 dB under it): nothing of it is heard",
        "lower",
    ),
    "ideal_mask_sir_gain_db": ("median sir_gain_db of the ideal binary mask: what a mask can reach on these clips", ""),
    "other_class_sir_gain_db": (
        "two classes mixed: median gain (dB) of the class not decided over the rest, in the method's interpretation of that class (class-conditional methods only)",
        "higher",
    ),
    "randomisation_similarity": (
        "rank correlation of the masks with those after re-drawing the classifier from the top down to the deepest block the decoder reads (1 = unchanged)",
        "lower",
    ),
    "randomisation_floor": (
        "rank correlation of the masks of two unrelated clips: the method's own prior, the floor of randomisation_similarity",
        "",
    ),
    "l1_weight": ("the L1 weight in force (adapted when l1_rate > 0)", ""),
}

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1400px; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
table.clips {{ width: 100%; }}
td, th {{ border: 1px solid #ccc; padding: 0.4em; vertical-align: middle; text-align: left; }}
tr.warning td, div.warning {{ background: #fff3cd; }}
td.picture img {{ width: 100%; max-width: 1200px; height: auto; display: block; }}
audio {{ width: 100%; min-width: 12em; }}
</style>
</head>
<body>
<h1>{title}</h1>
{links}
{warnings}
{metrics}
<table class="clips">
<tr><th>clip</th><th>true class</th><th>prediction (probability)</th><th>energy kept</th><th>input</th><th>interpretation</th><th>the sound that should be heard (SIR gain)</th></tr>
{rows}
</table>
</body>
</html>
"""


def metric_description(name):
    """What metric ``name`` means and which way is better; a ``<name>_<mask>`` key (``AD_random_mask``) is
    described as its metric, for that mask.

    Example
    -------
    >>> metric_description("AD_random_mask")[1], metric_description("AD_random_mask")[0].endswith("(random mask)")
    ('lower', True)
    >>> metric_description("localization_ratio_all_ones_mask")[0].endswith("(1 = chance) (all ones mask)")
    True
    """
    if name in METRIC_DESCRIPTIONS:
        return METRIC_DESCRIPTIONS[name]
    for metric in sorted(METRIC_DESCRIPTIONS, key=len, reverse=True):  # the longest metric name that fits
        if name.startswith(f"{metric}_"):
            meaning, better = METRIC_DESCRIPTIONS[metric]
            return f"{meaning} ({name[len(metric) + 1 :].replace('_', ' ')})", better
    return "", ""


def _metrics_table(stats):
    if not stats:
        return ""
    cells = []
    for name, value in stats.items():
        meaning, better = metric_description(name)
        shown = "-" if value is None else f"{value:.4g}"  # None: no clip has a value (every one near-silent)
        cells.append(
            f"<tr><td>{html.escape(name)}</td><td>{shown}</td><td>{html.escape(meaning)}</td>"
            f"<td>{html.escape(better)}</td></tr>"
        )
    header = "<tr><th>metric</th><th>value</th><th>what it says</th><th>better</th></tr>"
    return f'<table class="metrics">{header}{"".join(cells)}</table>'


def _row(row):
    def link(key):
        return html.escape(row[key], quote=True)

    energy = f"{100 * row['energy_kept']:.1f}%" if "energy_kept" in row else ""
    return (
        f"<tr><td>{html.escape(row['name'])}</td><td>{html.escape(row.get('label', ''))}</td>"
        f"<td>{html.escape(row.get('prediction', ''))}</td><td>{energy}</td>"
        f'<td><audio controls preload="metadata" src="{link("input")}"></audio></td>'
        f'<td><audio controls preload="metadata" src="{link("interpretation")}"></audio></td>'
        f"<td>{_target_cell(row)}</td></tr>\n"
        f"{_notes_row(row.get('notes'))}"
        f'<tr><td class="picture" colspan="7"><img src="{link("image")}" alt="spectrogram of {html.escape(row["name"])}">'
        f"{_timeline_strip(row.get('timeline'))}</td></tr>"
    )


def _target_cell(row):
    """The target's player and, under it, the interpretation's SIR gain in dB; empty without a target."""
    if "target" not in row:
        return ""
    gain = row.get("sir_gain_db")
    words = "no gain: near-silent" if gain is None else f"{gain:+.1f} dB"
    player = f'<audio controls preload="metadata" src="{html.escape(row["target"], quote=True)}"></audio>'
    return f"{player}<br>SIR gain {words}"


def _notes_row(notes):
    """A row of plain-words warnings about a clip's interpretation, or nothing."""
    if not notes:
        return ""
    items = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    return f'<tr class="warning"><td colspan="7"><strong>Not trustworthy:</strong><ul>{items}</ul></td></tr>\n'


def _timeline_strip(timeline):
    """A line of ``start-end s: class (probability)`` per analysis window, or nothing."""
    if not timeline:
        return ""
    spans = (
        f"{entry['start_s']:.1f}-{entry['end_s']:.1f} s: {html.escape(entry['class'])} ({entry['probability']:.2f})"
        for entry in timeline
    )
    return f'<p class="timeline">{" | ".join(spans)}</p>'


def _links(links):
    if not links:
        return ""
    items = "".join(f'<li><a href="{html.escape(path)}">{html.escape(text)}</a></li>' for text, path in links)
    return f'<ul class="links">{items}</ul>'


def _warnings(warnings):
    if not warnings:
        return ""
    items = "".join(f"<li>{html.escape(warning)}</li>" for warning in warnings)
    return f'<div class="warning"><strong>Not trustworthy:</strong><ul>{items}</ul></div>'


def write_report(folder, rows, stats, title, links=(), warnings=()):
    """Writes ``<folder>/report.html``.

    Arguments
    ---------
    folder : str
        Where the report goes; every path in ``rows`` is relative to it.
    rows : list of dict
        Per clip: ``name``, ``input``, ``interpretation`` (wav paths), ``image``
        (PNG path) and optionally ``label`` (the true class), ``prediction``
        (text), ``energy_kept`` (a share), ``notes`` (plain-words warnings),
        ``timeline`` (``LMACInterpreter.timeline``'s entries, shown under the
        picture), ``target`` (wav path: the sound the interpretation should play)
        and ``sir_gain_db`` (its gain, None for a near-silent interpretation).
    stats : dict of str to float or None
        Metrics shown in a table above the clips.
    title : str
    links : sequence of (str, str)
        Text and relative path of pages shown above the metrics (the training curves).
    warnings : sequence of str
        Plain-words warnings about the whole evaluation, shown above the metrics.

    Returns
    -------
    str
        The report's path.

    Raises
    ------
    ValueError
        A row's or a link's file is missing or its path is absolute (the report would not travel).
    """
    named_files = [
        (f"report row {row['name']!r}: {key}", row[key])
        for row in rows
        for key in ("input", "interpretation", "image", "target")
        if key in row
    ]
    for what, path in [*named_files, *((f"link {text!r}", path) for text, path in links)]:
        if os.path.isabs(path) or not os.path.isfile(os.path.join(folder, path)):
            raise ValueError(f"{what} {path!r} is not a file relative to {folder}.")
    page = PAGE.format(
        title=html.escape(title),
        links=_links(links),
        warnings=_warnings(warnings),
        metrics=_metrics_table(stats),
        rows="\n".join(_row(row) for row in rows),
    )
    path = os.path.join(folder, "report.html")
    with open(path, "w", encoding="utf-8") as file:
        file.write(page)
    return path
