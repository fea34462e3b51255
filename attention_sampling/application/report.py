"""A static review page of predictions: index.html and its images, opened from the file system.

One row per image: its explanation picture (figures.plot_explanation: the view, the attention overlay and
the sampled patches), the patch weights, the predicted class and probabilities, the attention entropy and
the looks' agreement. The least certain come first (lowest agreement, then lowest probability of the chosen
class); buttons re-sort in the page. Everything from the user (file names, class names) is HTML-escaped.
The page is rewritten, atomically, after every image: a stopped run leaves a valid page. A fresh page in a
folder holding an earlier one of the same run (without --resume) first replaces it by an empty page, then
removes the earlier page's pictures.
"""
import html
import json
import os
from urllib.parse import quote

from .errors import AttentionSamplingError
from .geojson import write_atomic
from .prediction import REPORT_IMAGES

ROWS_FILE = "rows.json"
SORT_SCRIPT = """
function sortRows(key) {
  var body = document.getElementById("rows");
  var rows = Array.prototype.slice.call(body.querySelectorAll("tr.image"));
  rows.sort(function (a, b) { return parseFloat(a.dataset[key]) - parseFloat(b.dataset[key]); });
  rows.forEach(function (row) { body.appendChild(row); });
}
"""


def doubt_order(row):
    """Sort key: error rows last, then the least agreement and the lowest chosen probability first."""
    if "error" in row:
        return (1, 0.0, 0.0, row["path"])
    return (0, row["agreement"], max(row["probabilities"].values()), row["path"])


def prepare(directory, run):
    """Make DIR and DIR/images -> the rows an earlier prediction with the same run left there (for --resume);
    a folder holding another run's page is an error, not overwritten."""
    try:
        os.makedirs(os.path.join(directory, REPORT_IMAGES), exist_ok=True)
    except OSError as error:
        raise AttentionSamplingError(f"--report {directory}: {error.strerror or error}") from None
    rows_path = os.path.join(directory, ROWS_FILE)
    if not os.path.isfile(rows_path):
        return []
    try:
        with open(rows_path, encoding="utf-8") as handle:
            stored = json.load(handle)
        earlier, rows = stored["run"], list(stored["rows"])
    except (ValueError, KeyError, TypeError):
        raise AttentionSamplingError(f"{rows_path}: not a review page's rows (JSON)") from None
    if earlier != run:
        raise AttentionSamplingError(f"--report {directory}: holds the page of another run ({earlier}); "
                                     "choose another folder")
    return rows


def own_pictures(directory, rows):
    """-> the paths of DIR/images/ files the rows' pictures name; an entry naming any other file (rows.json
    edited by hand) is not the page's own and is left out."""
    paths = []
    for row in rows:
        report = row.get("report") if isinstance(row, dict) else None
        picture = report.get("picture") if isinstance(report, dict) else None
        if not isinstance(picture, str):
            continue
        folder, name = os.path.split(os.path.normpath(picture))
        if folder == REPORT_IMAGES and name.endswith(".png"):
            paths.append(os.path.join(directory, REPORT_IMAGES, name))
    return paths


def remove_pictures(directory, rows):
    """Remove the pictures of an earlier page's rows: a fresh page re-draws those it shows and keeps no other."""
    for path in own_pictures(directory, rows):
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise AttentionSamplingError(f"--report {path}: {error.strerror or error}") from None


def row_html(row):
    escape = html.escape  # quote=True: names land inside attributes too
    if "error" in row:
        return (f'<tr class="image error" data-confidence="2" data-agreement="2"><td></td>'
                f'<td class="path">{escape(row["path"])}</td><td colspan="4">error: {escape(row["error"])}</td></tr>')
    chosen = max(row["probabilities"].values())
    probabilities = "<br>".join(f"{escape(name)}: {p:.3f}" for name, p in row["probabilities"].items())
    report = row.get("report", {})
    weights = " ".join(f"{k + 1}: {w:.3g}" for k, w in enumerate(report.get("weights", [])))
    picture = report.get("picture")
    # Percent-encoded: a "#" or "?" in a file name would otherwise end the path part of the URL.
    address = escape(quote(picture.replace(os.sep, "/"))) if picture else ""
    image = (f'<a href="{address}"><img class="explanation" src="{address}" '
             f'alt="{escape(row["path"])}" width="480"></a>' if picture else "")
    return (f'<tr class="image" data-confidence="{chosen:.6f}" data-agreement="{row["agreement"]:.6f}">'
            f'<td>{image}</td><td class="path">{escape(row["path"])}</td>'
            f'<td class="prediction">{escape(row["prediction"])}</td><td>{probabilities}</td>'
            f'<td>entropy {row["attention_entropy"]:.3f}<br>agreement {row["agreement"]:.3f} over '
            f'{row["looks"]} looks<br>spread {row["spread"]:.3f}</td><td class="weights">{weights}</td></tr>')


def page_html(rows, title):
    ordered = sorted(rows, key=doubt_order)
    counts = {}
    for row in ordered:
        counts[row.get("prediction", "error")] = counts.get(row.get("prediction", "error"), 0) + 1
    summary = ", ".join(f"{html.escape(name)}: {n}" for name, n in sorted(counts.items()))
    body = "\n".join(row_html(row) for row in ordered)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif}} td{{vertical-align:top;padding:4px;border-top:1px solid #ccc}}
.path{{max-width:20em;word-break:break-all}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p id="summary">{len(ordered)} image(s); predicted {summary}. The least certain first.</p>
<p>Sort: <button onclick="sortRows('confidence')">by confidence</button>
<button onclick="sortRows('agreement')">by agreement</button></p>
<table><thead><tr><th>explanation</th><th>image</th><th>class</th><th>probabilities</th><th>attention</th>
<th>patch weights</th></tr></thead>
<tbody id="rows">
{body}
</tbody></table>
<script>{SORT_SCRIPT}</script>
</body></html>
"""


class Report:
    """The page of DIR, rewritten after every row; rows.json keeps them for --resume."""

    def __init__(self, directory, run, resume=False):
        self.directory, self.run = directory, os.path.abspath(run)
        self.title = f"predict.py {run}"
        earlier = prepare(directory, self.run)
        self.rows = earlier if resume else []
        if earlier and not resume:
            # The page without the earlier rows goes first: no moment shows a picture already removed.
            self.write()
            remove_pictures(directory, earlier)

    def add(self, row):
        # A copy: the caller strips "report" from the row it prints.
        self.rows = [old for old in self.rows if old["path"] != row["path"]] + [dict(row)]
        self.write()

    def write(self):
        write_atomic(os.path.join(self.directory, ROWS_FILE), json.dumps({"run": self.run, "rows": self.rows}))
        write_atomic(os.path.join(self.directory, "index.html"), page_html(self.rows, self.title))
