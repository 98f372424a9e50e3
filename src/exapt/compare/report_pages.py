"""The compare report's two pages from the same numbers: report.html (self-contained,
every user string through html.escape) and report.md for the terminal (no images)."""
from __future__ import annotations

import html

from . import class_report as C
from . import reliability_report as R
from . import forgetting_report as F
from .report_figures import figures

CSS = """
:root { color-scheme: light; }
body { margin: 0; background: #f6f7f9; color: #1d2330;
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1040px; margin: 0 auto; padding: 28px 28px 60px; background: #fff; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.25em; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #e3e6ea; }
h3 { font-size: 1.05em; margin: 24px 0 8px; }
.sub { color: #5a6272; margin: 0 0 18px; }
.recommendation { background: #eef6ee; border-left: 4px solid #2e7d32; padding: 12px 16px; margin: 10px 0; }
.caution { color: #8a4b00; }
.note { background: #fff8e6; border-left: 4px solid #e0a100; padding: 10px 14px; }
figure.exapt-figure { margin: 18px 0 28px; }
figure.exapt-figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { color: #4a5262; font-size: 0.92em; margin-top: 6px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.92em; }
th, td { border: 1px solid #dde1e6; padding: 4px 9px; text-align: right; white-space: nowrap; }
th.text, td.text { text-align: left; }
thead th { background: #f0f2f5; }
tbody tr:nth-child(even) { background: #fafbfc; }
.settings th, .settings td { white-space: normal; text-align: left; }
pre { background: #f0f2f5; padding: 10px 14px; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
"""


def render_html(report) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{e(report.title())}</title>", f"<style>{CSS}</style>", "</head>", "<body>", "<main>",
             f"<h1>{e(report.title())}</h1>", f'<p class="sub">{e(report.subtitle())}</p>']
    for note in (report.progress_note(), report.left_out_note()):
        if note:
            parts.append(f'<p class="note">{e(note)}</p>')
    if report.rec is None:
        parts.append(f'<p class="note">{e(report.problem)}</p>')
    else:
        parts += ['<section id="recommendation">', "<h2>Recommendation</h2>",
                  f'<p class="recommendation"><strong>Use {e(report.rec["strategy"])}.</strong> '
                  + " ".join(_html_reason(r) for r in report.rec["reasons"]) + "</p>",
                  *([f'<p class="note">{e(report.meta["metric_note"])}</p>'] if report.meta.get("metric_note") else []),
                  "</section>"]
        parts += _html_figures(report)
        parts += ['<section id="tables">', "<h2>Tables</h2>",
                  f"<h3>Test {e(report.label)}: mean ± std over seeds</h3>", _html_table(*report.summary_grid()),
                  f"<h3>Gain over {e(report.baseline)} (paired by seed)</h3>"]
        if report.has_baseline and not report.gain.empty:
            parts.append(_html_table(*report.gain_grid()))
        else:
            parts.append(f'<p class="note">{e(report.gain_note())}</p>')
        parts.append(f"<h3>Labels saved: what {e(report.baseline)} would need to match</h3>")
        if report.has_baseline and not report.saved.empty:
            parts.append(_html_table(*report.saved_grid()))
        else:
            parts.append(f'<p class="note">{e(report.saved_note())}</p>')
        if F.has_source(report):
            parts += [f"<h3>{e(F.heading(report))}</h3>", _html_table(*F.grid(report))]
        if C.has_classes(report):
            parts += [f"<h3>{e(C.heading(report))}</h3>", _html_table(*C.grid(report))]
        parts += ["<h3>Time and memory</h3>", _html_table(*report.cost_grid()),
                  "<h3>Ranking</h3>", _html_table(*report.ranking_grid(), left=2), "</section>"]
    parts += ['<section id="settings">', "<h2>Settings</h2>", '<table class="settings"><tbody>']
    parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in report.settings()]
    parts += ["</tbody></table>", "</section>", '<section id="reproduce">', "<h2>How to reproduce</h2>"]
    command = report.meta.get("command")
    if command:
        parts.append(f"<pre><code>{e(str(command))}</code></pre>")
    else:
        parts.append("<p>The command line was not recorded.</p>")
    parts += ["</section>", "</main>", "</body>", "</html>", ""]
    return "\n".join(parts)


def _html_figures(report) -> list[str]:
    """The figures section: each figure embedded as PNG, or the note that says why it is missing."""
    e = html.escape
    parts = ['<section id="figures">', "<h2>Figures</h2>"]
    for fid, png, caption, fig_note in figures(report):
        if png is None:
            parts.append(f'<p class="note" id="{fid}-note">{e(fig_note)}</p>')
        else:
            parts.append(f'<figure class="exapt-figure" id="{fid}">'
                         f'<img src="data:image/png;base64,{png}" alt="{e(caption)}">'
                         f"<figcaption>{e(caption)}</figcaption></figure>")
    parts.append("</section>")
    return parts


def render_markdown(report) -> str:
    lines = [f"# {_md(report.title())}", "", _md(report.subtitle()), ""]
    for note in (report.progress_note(), report.left_out_note()):
        if note:
            lines += [f"> {_md(note)}", ""]
    if report.rec is None:
        lines += [_md(report.problem), ""]
    else:
        lines += ["## Recommendation", "",
                  f"**Use {_md(report.rec['strategy'])}.** " + " ".join(_md(r) for r in report.rec["reasons"]), "",
                  *([_md(report.meta["metric_note"]), ""] if report.meta.get("metric_note") else []),
                  f"## Test {report.label} (mean ± std over seeds)", "", _md_table(*report.summary_grid()), "",
                  f"## Gain over {_md(report.baseline)} (paired by seed)", ""]
        if report.has_baseline and not report.gain.empty:
            lines += [_md_table(*report.gain_grid()), ""]
        else:
            lines += [_md(report.gain_note()), ""]
        lines += [f"## Labels saved: what {_md(report.baseline)} would need to match", ""]
        if report.has_baseline and not report.saved.empty:
            lines += [_md_table(*report.saved_grid()), ""]
        else:
            lines += [_md(report.saved_note()), ""]
        if F.has_source(report):
            lines += [f"## {_md(F.heading(report))}", "", _md_table(*F.grid(report)), ""]
        if C.has_classes(report):
            lines += [f"## {_md(C.heading(report))}", "", _md_table(*C.grid(report)), ""]
        if R.has_reliability(report):
            lines += ["## Reliability of each strategy's best cell", "", _md(R.caption()), "",
                      _md_table(*R.grid(report), left=2), ""]
        lines += ["## Time and memory", "", _md_table(*report.cost_grid()), "",
                  "## Ranking", "", _md_table(*report.ranking_grid(), left=2), ""]
    lines += ["## Settings", ""] + [f"- {_md(k)}: {_md(v)}" for k, v in report.settings()] + [""]
    lines += ["## How to reproduce", ""]
    command = report.meta.get("command")
    if command:
        fence = "~~~~" if "```" in str(command) else "```"
        lines += [fence, str(command), fence, ""]
    else:
        lines += ["The command line was not recorded.", ""]
    return "\n".join(lines)


def _html_reason(reason: str) -> str:
    text = html.escape(reason)
    return f'<span class="caution">{text}</span>' if reason.startswith("Caution") else text


def _html_table(head: list[str], body: list[list[str]], left: int = 1) -> str:
    """Text columns (the first `left`) align left, numbers right."""
    e = html.escape

    def cell(tag, i, c):
        return f'<{tag} class="text">{e(str(c))}</{tag}>' if i < left else f"<{tag}>{e(str(c))}</{tag}>"

    rows = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(r)) + "</tr>" for r in body)
    return ("<table><thead><tr>" + "".join(cell("th", i, h) for i, h in enumerate(head)) + "</tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def _md(text) -> str:
    """One line of Markdown: table pipes escaped, newlines flattened."""
    return str(text).replace("|", r"\|").replace("\r", " ").replace("\n", " ")


def _md_table(head: list[str], body: list[list[str]], left: int = 1) -> str:
    lines = ["| " + " | ".join(_md(h) for h in head) + " |",
             "|" + "|".join(["---"] * left + ["---:"] * (len(head) - left)) + "|"]
    lines += ["| " + " | ".join(_md(c) for c in r) + " |" for r in body]
    return "\n".join(lines)
