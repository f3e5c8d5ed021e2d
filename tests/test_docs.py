"""The README and the docs link to files that exist and to headings that exist."""

import re
from pathlib import Path

from tests.configs import ROOT

LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(markdown: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation but '-' and '_' dropped, spaces
    to '-'."""
    headings = re.findall(r"^#+ (.+)$", markdown.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def broken_links(markdown: Path) -> list[str]:
    """The relative links of ``markdown`` whose file, or heading in a Markdown file, does not exist."""
    broken = []
    for target in LINK.findall(markdown.read_text()):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked offline
            continue
        path, _, anchor = target.partition("#")
        file = (markdown.parent / path).resolve() if path else markdown
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    return broken


def test_anchors_are_githubs():
    assert {"goal-image-reacher-jepa_goal", "td-mpc2--jepa-presets", "two-commands"} <= anchors(ROOT / "README.md")


def test_readme_and_docs_links_resolve(tmp_path):
    (tmp_path / "a.md").write_text("# A b\n[ok](#a-b) [gone](#c) [file](a.md) [missing](b.png) [web](https://x.y)\n")
    assert broken_links(tmp_path / "a.md") == ["#c", "b.png"]
    found = {str(path.relative_to(ROOT)): broken_links(path)
             for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]}
    assert {path: links for path, links in found.items() if links} == {}
