"""The plan report: one self-contained HTML page with two PNG figures beside it.

:func:`write_report` writes, in its output folder, ``dvh.png`` (cumulative
DVHs, the initial/reference plan dashed), ``dose_slices.png`` (axial, coronal
and sagittal dose slices with contours) and ``report.html``, which links the
two images and holds the tables: prescriptions with the targets' D95/D5/Dmax,
the run summary, the scorecard with the initial and final plans side by side
(the paper's Tables 7 and 8) and DVH metrics. Every file is written
atomically, the HTML last, so a ``report.html`` is always complete. The page
has no external CSS or JavaScript; all text is escaped.

Units: doses in Gy, volumes in cm^3 (cc) or % as labelled.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from airtp.case import atomic_write
from airtp.report.plots import ReportError, dose_slices_figure, dvh_figure, structure_colour, target_names

__all__ = ["write_report", "render_html", "REPORT_NAME", "DVH_PNG", "SLICES_PNG"]

REPORT_NAME = "report.html"
DVH_PNG = "dvh.png"
SLICES_PNG = "dose_slices.png"
DASH = "\u2013"

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 1.5em auto; max-width: 1500px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
p.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 2px 8px; }
th { background: #f0f0f0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: bold; background: #f7f7f7; }
td.ns { color: #999; font-style: italic; }
td.better { color: #1a7f1a; }
td.worse { color: #b00020; }
span.swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.4em; vertical-align: middle;
              border: 1px solid #888; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
ul.notes { font-size: 0.85em; color: #555; }
"""


# Formatting ------------------------------------------------------------------

def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _num(value, digits: int = 2) -> str:
    """A number with `digits` decimals; '–' for None/NaN."""
    if value is None:
        return DASH
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return DASH
    return f"{v:.{digits}f}"


def _value(v) -> str:
    """Plain text of a summary value (numbers rounded, lists joined)."""
    if v is None:
        return DASH
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return DASH
        return f"{v:.2f}" if v == 0 or abs(v) >= 0.01 else f"{v:.3g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v)
    return str(v)


def _table(header, rows, classes=None, row_classes=None) -> str:
    """An HTML table; every cell is escaped text unless given as ("html", markup)."""
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead>", "<tbody>"]
    for r, row in enumerate(rows):
        rc = (row_classes or {}).get(r)
        cells = []
        for c, cell in enumerate(row):
            cls = None
            if classes is not None:
                cls = classes[r][c] if isinstance(classes, list) else classes.get(c)
            attr = f' class="{_e(cls)}"' if cls else ""
            text = cell[1] if isinstance(cell, tuple) and cell and cell[0] == "html" else _e(cell)
            cells.append(f"<td{attr}>{text}</td>")
        out.append((f'<tr class="{_e(rc)}">' if rc else "<tr>") + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _swatch(name: str, targets) -> tuple[str, str]:
    colour = structure_colour(name, targets)
    return ("html", f'<span class="swatch" style="background:{_e(colour)}"></span>{_e(name)}')


# Sections --------------------------------------------------------------------

def _title(case, summary) -> tuple[str, str]:
    summary = summary or {}
    site = summary.get("site", case.site)
    technique = summary.get("technique")
    parts = [f"site {site}"] + ([f"technique {technique}"] if technique else [])
    return f"Plan report: {case.patient_id}", ", ".join(str(p) for p in parts)


def _prescription_section(case, dvhs, targets) -> str:
    if not case.prescriptions:
        return "<h2>Prescription</h2>\n<p>No prescription.</p>"
    rows = []
    for p in case.prescriptions_by_dose():
        d = dvhs.get(p.structure)
        has = d is not None and not d.empty
        rows.append((
            _swatch(p.structure, targets), _num(p.dose_gy), str(p.fractions), _num(p.dose_per_fraction_gy),
            _num(d.dose_at_percent(95.0)) if has else DASH, _num(d.dose_at_percent(5.0)) if has else DASH,
            _num(d.max_gy) if has else DASH,
        ))
    header = ("Target", "Dose (Gy)", "Fractions", "Gy/fraction", "D95 (Gy)", "D5 (Gy)", "Dmax (Gy)")
    return "<h2>Prescription</h2>\n" + _table(header, rows, classes={i: "num" for i in range(1, 7)})


def _flatten(d, prefix="") -> list[tuple[str, object]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.extend(_flatten(v, key + " / "))
        else:
            out.append((key, v))
    return out


def _summary_section(summary) -> str:
    if not summary:
        return ""
    items = _flatten(summary)
    rows = [(k, _value(v)) for k, v in items]
    numeric = [[None, "num" if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) else None]
               for _, v in items]
    return "<h2>Summary</h2>\n" + _table(("Item", "Value"), rows, classes=numeric)


def _item_key(result) -> tuple:
    it = result.item
    return it.structure, it.metric, it.input_text()


def _output_text(r) -> str:
    if not r.scored:
        return DASH
    unit = {"cc": "CC"}.get(r.item.output_unit or "", r.item.output_unit or "")
    return f"{r.output_value:.2f} {unit}".strip()


def _pair_results(initial, final) -> list[tuple]:
    """Rows (initial result or None, final result or None), matched by item (structure, metric, input)."""
    reports = [initial, final]
    order, table = [], {}
    for col, rep in enumerate(reports):
        if rep is None:
            continue
        seen = {}
        for r in rep.results:
            base = _item_key(r)
            n = seen.get(base, 0)
            seen[base] = n + 1
            key = base + (n,)
            if key not in table:
                table[key] = [None, None]
                order.append(key)
            table[key][col] = r
    return [tuple(table[k]) for k in order]


def _scorecard_section(initial, final) -> str:
    if initial is None and final is None:
        return ""
    cols = [(label, rep) for label, rep in (("initial", initial), ("final", final)) if rep is not None]
    header = ["StructId", "MetricType", "Input"]
    for label, _ in cols:
        header += [f"Output {label}", f"Score {label}"]
    rows, classes, notes = [], [], []
    for pair in _pair_results(initial, final):
        present = [r for r in pair if r is not None]
        first = present[-1]
        it = first.item
        struct = next((r.struct_id for r in reversed(present) if r.struct_id), it.structure)
        row, cls = [struct, it.metric, it.input_text(first.input_value)], [None, None, None]
        for col, (label, _) in enumerate(cols):
            r = pair[0] if label == "initial" else pair[1]
            if r is None:
                row += [DASH, DASH]
                cls += ["ns", "ns"]
            elif not r.scored:
                row += [DASH, "not scored"]
                cls += ["ns", "ns"]
            else:
                row += [_output_text(r), f"{r.score:.2f}"]
                cls += ["num", "num"]
        if len(cols) == 2 and all(r is not None and r.scored for r in pair):
            diff = pair[1].score - pair[0].score
            if abs(diff) >= 0.005:
                cls[-1] = "num better" if diff > 0 else "num worse"
        rows.append(row)
        classes.append(cls)
        reasons = {}
        for label, r in zip(("initial", "final"), pair):
            if r is not None and not r.scored:
                reasons.setdefault(r.reason or "not evaluated", []).append(label)
        for reason, labels in reasons.items():
            which = " and ".join(labels) if len(cols) == 2 else ""
            notes.append(f"{it.structure} {it.metric} {it.input_text(first.input_value)}: {reason}"
                         + (f" ({which})" if which else ""))
    total = ["Final Score", DASH, DASH]
    top = ["Maximum (scored items)", DASH, DASH]
    for _, rep in cols:
        total += ["", f"{rep.total:.2f}"]
        top += ["", f"{rep.max_total:.2f}"]
    rows += [total, top]
    classes += [[None, None, None] + ["num"] * (2 * len(cols))] * 2
    names = sorted({rep.scorecard for _, rep in cols})
    counts = "; ".join(f"{label}: {sum(r.scored for r in rep.results)} of {len(rep.results)} items scored"
                       for label, rep in cols)
    out = [f"<h2>Scorecard</h2>\n<p>{_e(', '.join(names))} ({_e(counts)})</p>",
           _table(header, rows, classes=classes, row_classes={len(rows) - 2: "total", len(rows) - 1: "total"})]
    if notes:
        out.append("<p>Not scored:</p>\n<ul class=\"notes\">" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    return "\n".join(out)


def _dvh_metrics_section(dvhs, targets) -> str:
    rows = []
    for name, d in dvhs.items():
        if d.empty:
            rows.append((_swatch(name, targets), _num(d.volume_cc), "empty", DASH, DASH, DASH, DASH))
            continue
        rows.append((_swatch(name, targets), _num(d.volume_cc), _num(d.min_gy), _num(d.mean_gy), _num(d.max_gy),
                     _num(d.dose_at_percent(95.0)), _num(d.dose_at_percent(2.0))))
    header = ("Structure", "Volume (cc)", "Min (Gy)", "Mean (Gy)", "Max (Gy)", "D95 (Gy)", "D2 (Gy)")
    return "<h2>DVH metrics</h2>\n" + _table(header, rows, classes={i: "num" for i in range(1, 7)})


def render_html(*, case, dvhs, score_initial=None, score_final=None, summary=None, has_reference=False,
                dvh_png: str = DVH_PNG, slices_png: str = SLICES_PNG) -> str:
    """The report page as text (no files written); images are linked by relative name."""
    targets = target_names(list(dict.fromkeys([*case.structures, *dvhs])), case.prescriptions)
    title, sub = _title(case, summary)
    dvh_caption = "Cumulative DVHs" + (": final plan solid, initial/reference plan dashed" if has_reference else "")
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">{_e(sub)}</p>',
        _prescription_section(case, dvhs, targets),
        _summary_section(summary),
        _scorecard_section(score_initial, score_final),
        f"<h2>DVH</h2>\n<p>{_e(dvh_caption)}.</p>\n"
        f'<p><a href="{_e(dvh_png)}"><img src="{_e(dvh_png)}" alt="{_e("DVH of " + case.patient_id)}"></a></p>',
        "<h2>Dose slices</h2>\n<p>Axial, coronal and sagittal slices through the centre of the highest-dose target; "
        "CT in grey, dose colour wash, isodose lines dashed (% of the highest prescription), contours solid.</p>\n"
        f'<p><a href="{_e(slices_png)}"><img src="{_e(slices_png)}" '
        f'alt="{_e("Dose slices of " + case.patient_id)}"></a></p>',
        _dvh_metrics_section(dvhs, targets),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body>\n</html>\n"
    )


def write_report(out_dir, *, case, dose, dvhs, score_initial=None, score_final=None, summary: dict | None = None,
                 reference_dvhs=None) -> Path:
    """Write ``report.html``, ``dvh.png`` and ``dose_slices.png`` into `out_dir`; returns the HTML path.

    Parameters
    ----------
    out_dir : folder (created if needed).
    case : :class:`~airtp.Case`.
    dose : (z, y, x) array, Gy, on the case grid (the final plan).
    dvhs : dict name -> DVH of `dose` (what the DVH figure and table show).
    score_initial, score_final : :class:`~airtp.evaluation.scorecard.ScoreReport`, optional
        Shown side by side, item by item, with their totals.
    summary : dict, optional
        Figures of the run (scores, target doses, timings...), shown as a
        table; nested dicts are flattened; ``site`` and ``technique`` also
        go in the title.
    reference_dvhs : dict name -> DVH, optional
        The initial/reference plan, dashed in the DVH figure.

    The images are written first and the HTML last, each atomically.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not any(not d.empty for d in dvhs.values()):
        raise ReportError(f"report of case '{case.patient_id}': no non-empty DVH to show")
    targets = target_names(list(dict.fromkeys([*case.structures, *dvhs, *(reference_dvhs or {})])),
                           case.prescriptions)
    dvh_figure(dvhs, out / DVH_PNG, reference=reference_dvhs, targets=targets,
               title=f"{case.patient_id}: cumulative DVH", labels=("final", "initial"))
    dose_slices_figure(case, dose, out / SLICES_PNG)
    text = render_html(case=case, dvhs=dvhs, score_initial=score_initial, score_final=score_final, summary=summary,
                       has_reference=bool(reference_dvhs))
    path = out / REPORT_NAME
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path
