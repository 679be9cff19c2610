"""``report.html``: the suspected problems as thumbnails side by side, in one self-contained file.

Every thumbnail is a PNG data URL inside the page (no files beside it, nothing fetched), so the page can
be mailed or opened from any folder. Each section shows at most ``max_items`` findings, the most
suspicious first; the CSVs hold them all.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from src.auditing.findings import Findings
from src.data.files.listing import relative_posix
from src.data.files.image_reader import UNREADABLE_IMAGE_ERRORS, load_rgb
from src.core.atomic_write import atomic_open

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ccc; }
pre.summary { background: #f4f4f4; padding: .6rem; white-space: pre-wrap; }
.items { display: flex; flex-wrap: wrap; gap: .8rem; }
.group, .item { border: 1px solid #ccc; border-radius: 6px; padding: .5rem; background: #fafafa; }
.group.leak { border-color: #c0392b; } .group.conflict { border-color: #d68910; }
.group .title, .item .title { font-size: .8rem; font-weight: 600; margin-bottom: .3rem; }
.members { display: flex; gap: .4rem; }
figure { margin: 0; width: 112px; font-size: .7rem; overflow-wrap: anywhere; }
figure img { width: 112px; height: 112px; object-fit: contain; background: #ddd; image-rendering: pixelated; }
.empty { color: #777; }
"""


def thumbnail_url(path: Path, side: int) -> str:
    """A PNG data URL of ``path`` at most ``side`` pixels wide and high (an empty string if unreadable)."""
    try:
        image = load_rgb(path)
    except UNREADABLE_IMAGE_ERRORS:
        return ""
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _figure(findings: Findings, i: int, caption: str, side: int) -> str:
    name = relative_posix(findings.paths[i], findings.root)
    return (f'<figure data-path="{html.escape(name)}"><img alt="{html.escape(name)}" '
            f'src="{thumbnail_url(findings.paths[i], side)}"><figcaption>{html.escape(name)}<br>'
            f"{html.escape(caption)}</figcaption></figure>")


def _section(anchor: str, title: str, blocks: list[str], total: int) -> str:
    shown = f" (the first {len(blocks)} of {total})" if total > len(blocks) else f" ({total})"
    body = "".join(blocks) if blocks else '<p class="empty">none found</p>'
    return f'<section id="{anchor}"><h2>{html.escape(title)}{shown}</h2><div class="items">{body}</div></section>'


def write_page(path: Path, findings: Findings, summary: list[str], *, max_items: int = 60, side: int = 96) -> None:
    """Write ``report.html``: the summary, then label issues, duplicate groups, outliers and odd images."""
    label = findings.label_name
    issues = [f'<div class="item"><div class="title">#{rank}: {html.escape(findings.classes[x.given])} &rarr; '
              f"{html.escape(findings.classes[x.suggested])}</div>"
              + _figure(findings, x.index, f"{findings.subsets[x.index]}, label quality {x.score:.3f}, odds {x.odds:.0f}:1", side) + "</div>"
              for rank, x in enumerate(findings.label_issues[:max_items], start=1)]
    groups = []
    for number, group in enumerate(findings.groups[:max_items], start=1):
        css = " ".join(c for c, flag in (("leak", "leak"), ("conflict", "label conflict")) if flag in group.flags)
        title = (f"group {number}: {group.kind}, {'exact copies' if group.exact else f'similarity {group.similarity:.3f}'}")
        members = "".join(_figure(findings, i, f"{label(i)}, {findings.subsets[i]}", side) for i in group.members)
        groups.append(f'<div class="group {css}" data-group="{number}"><div class="title">{html.escape(title)}</div>'
                      f'<div class="members">{members}</div></div>')
    outliers = ['<div class="item">' + _figure(findings, i, f"{label(i)}, score {findings.ood[i]:.3f}", side) + "</div>"
                for i in findings.outliers[:max_items]]
    odd = ['<div class="item">' + _figure(findings, i, f"{label(i)}: {', '.join(flags)}", side) + "</div>"
           for i, flags in list(findings.odd.items())[:max_items]]
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Audit of {html.escape(str(findings.root))}'
            f"</title><style>{STYLE}</style></head><body><h1>Audit of {html.escape(str(findings.root))}</h1>"
            f'<pre class="summary">{html.escape(chr(10).join(summary))}</pre>'
            + _section("label-issues", "Label issues: given -> suggested", issues, len(findings.label_issues))
            + _section("duplicates", "Duplicate groups", groups, len(findings.groups))
            + _section("outliers", "Outliers", outliers, len(findings.outliers))
            + _section("odd-images", "Odd images", odd, len(findings.odd))
            + "</body></html>")
    with atomic_open(path) as f:
        f.write(page)
