"""A self-contained HTML page to listen to interpretations: ``report.html``.

Every link is relative to the report's folder, so the folder can be copied
or zipped elsewhere and opened offline.
"""

import html
import os

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
td, th {{ border: 1px solid #ccc; padding: 0.4em; vertical-align: middle; }}
img {{ width: 720px; }}
</style>
</head>
<body>
<h1>{title}</h1>
{metrics}
<table class="clips">
<tr><th>clip</th><th>prediction</th><th>input</th><th>interpretation</th><th>spectrogram, mask, interpretation</th></tr>
{rows}
</table>
</body>
</html>
"""


def _metrics_table(stats):
    if not stats:
        return ""
    cells = "".join(f"<tr><td>{html.escape(name)}</td><td>{value:.4g}</td></tr>" for name, value in stats.items())
    return f'<table class="metrics"><tr><th>metric</th><th>value</th></tr>{cells}</table>'


def _row(row):
    def link(key):
        return html.escape(row[key], quote=True)

    return (
        f"<tr><td>{html.escape(row['name'])}</td><td>{html.escape(row.get('prediction', ''))}</td>"
        f'<td><audio controls preload="metadata" src="{link("input")}"></audio></td>'
        f'<td><audio controls preload="metadata" src="{link("interpretation")}"></audio></td>'
        f'<td><img src="{link("image")}" alt="spectrogram of {html.escape(row["name"])}"></td></tr>'
    )


def write_report(folder, rows, stats, title):
    """Writes ``<folder>/report.html``.

    Arguments
    ---------
    folder : str
        Where the report goes; every path in ``rows`` is relative to it.
    rows : list of dict
        Per clip: ``name``, ``input``, ``interpretation`` (wav paths), ``image``
        (PNG path) and optionally ``prediction`` (text).
    stats : dict of str to float or None
        Metrics shown in a table above the clips.
    title : str

    Returns
    -------
    str
        The report's path.

    Raises
    ------
    ValueError
        A row's file is missing or its path is absolute (the report would not travel).
    """
    for row in rows:
        for key in ("input", "interpretation", "image"):
            if os.path.isabs(row[key]) or not os.path.isfile(os.path.join(folder, row[key])):
                raise ValueError(f"report row {row['name']!r}: {key} {row[key]!r} is not a file relative to {folder}.")
    page = PAGE.format(
        title=html.escape(title), metrics=_metrics_table(stats), rows="\n".join(_row(row) for row in rows)
    )
    path = os.path.join(folder, "report.html")
    with open(path, "w", encoding="utf-8") as file:
        file.write(page)
    return path
