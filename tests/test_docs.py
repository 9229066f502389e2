"""The documentation: a README that fits on a few screens, the test command CI runs, and no relative
link in README.md or docs/*.md to a missing file or heading. Pure text: no TensorFlow."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 250

FENCED = re.compile(r"^```.*?^```[ \t]*$", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def without_code_blocks(text: str) -> str:
    return FENCED.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lowercased, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays, its target goes
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor; a repeated one gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(without_code_blocks(text)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page: Path) -> list[str]:
    """The relative links of a Markdown page whose file, or heading in that file, does not exist."""
    text = CODE_SPAN.sub("", without_code_blocks(page.read_text()))
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {linked.name}")
    return broken


def test_readme_fits_on_a_few_screens():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines: move the details to a page in docs/"


def test_readme_test_command_is_the_one_ci_runs():
    (command,) = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                  if line.strip().startswith("python -m pytest")]
    blocks = re.findall(r"^```bash\n(.*?)^```", README.read_text(), re.M | re.S)
    assert any(command in block.splitlines() for block in blocks), f"README.md does not show `{command}`"


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(ROOT)) for page in PAGES])
def test_relative_links_resolve(page):
    assert broken_links(page) == []


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in LINK.findall(README.read_text())}
    assert [page.name for page in PAGES[1:] if page.resolve() not in linked] == []


def test_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## Sec. 5.2: why `SimSiam` does not collapse\n\n## Notes\n\n## Notes\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Here\n\n"
        "[ok](other.md) [ok](other.md#sec-52-why-simsiam-does-not-collapse) [ok](#here) [ok](other.md#notes-1)\n"
        "[web](https://example.com/missing.md) `[code](missing.md)`\n\n"
        "```bash\n# Not a heading\n[in a block](missing.md)\n```\n\n"
        "[gone](missing.md) [no heading](other.md#nowhere) [no local heading](#not-a-heading)\n"
    )
    assert [problem.split(":")[0] for problem in broken_links(page)] == [
        "missing.md", "other.md#nowhere", "#not-a-heading"]
