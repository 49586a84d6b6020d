"""mkdocs hook: the parts of the docs that are generated at build time.

- ``<!-- schedules-table -->`` becomes the table of every entry of ``lrfind.SCHEDULES``, so a
  schedule added to the registry appears in the docs without anyone editing them.
- ``<!-- readme -->`` becomes the repository's README.md, its links rewritten for the site, so the
  front page and the site's home page are one text.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def schedules_table() -> str:
    """A Markdown table of the schedule registry: name, torch class, warmup, description, parameters."""
    from lrfind import SCHEDULES

    def cell(text: object) -> str:
        return str(text).replace("|", "\\|")

    rows = ["| name | torch class | warmup | what it does | parameters |", "|---|---|---|---|---|"]
    for name, schedule in SCHEDULES.items():
        params = "<br>".join(f"`{p.name}`: {p.doc}" + ("" if p.required else f" (default `{p.default!r}`)")
                             for p in schedule.params) or "none"
        warmup = "yes" if schedule.warmup_allowed else "no"
        rows.append(f"| `{name}` | `{schedule.torch_name}` | {warmup} | {cell(schedule.description)} | {cell(params)} |")
    return "\n".join(rows)


def readme_for_site() -> str:
    """README.md with ``docs/`` links made relative to the site and links outside the docs unlinked."""
    text = (ROOT / "README.md").read_text()
    text = text.replace("](docs/", "](")

    def unlink(match: re.Match) -> str:
        label, target = match.group(1), match.group(2)
        if target.startswith(("http://", "https://", "#")) or (ROOT / "docs" / target.split("#")[0]).is_file():
            return match.group(0)
        return label if label.startswith("`") else f"`{target}`" if label == target else label

    return re.sub(r"(?<!!)\[([^\]]+)\]\(([^)]+)\)", unlink, text)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (mkdocs' hook signature)
    if "<!-- schedules-table -->" in markdown:
        markdown = markdown.replace("<!-- schedules-table -->", schedules_table())
    if "<!-- readme -->" in markdown:
        markdown = markdown.replace("<!-- readme -->", readme_for_site())
    return markdown
