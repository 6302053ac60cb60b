"""A self-contained HTML page to listen to interpretations: ``report.html``.

Every link is relative to the report's folder, so the folder can be copied
or zipped elsewhere and opened offline.
"""

import html
import os

from lmac.scoring import measure_of

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
    known, measure = measure_of(name)
    if measure is None:
        return "", ""
    if known == name:
        return measure.meaning, measure.better
    return f"{measure.meaning} ({name[len(known) + 1 :].replace('_', ' ')})", measure.better


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
