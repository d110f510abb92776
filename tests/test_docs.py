"""README.md and the manual in docs/ point at what exists: links resolve, the files, make
targets and tools they name are there, and the model zoo table is the one zoo.py renders."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from cvt_backbone.checkpoint.zoo import markdown_table

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / 'README.md'
PAGES = [README, *sorted((ROOT / 'docs').glob('*.md'))]
#: Repository folders whose paths the pages name in backticks.
REPO_PATH = re.compile(r'`((?:configs|tools|cvt_backbone|docs|tests)/[^`\s]*)`')
FENCE = re.compile(r'^```.*?^```', re.M | re.S)


def ids(path: Path) -> str:
    return str(path.relative_to(ROOT))


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r'[`*]|\[([^\]]*)\]\([^)]*\)', r'\1', heading.strip().lower())
    return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


def anchors(page: Path) -> set[str]:
    prose = FENCE.sub('', page.read_text())
    return {slug(line.lstrip('#')) for line in prose.splitlines() if re.match(r'#{1,6} ', line)}


def links(page: Path) -> list[str]:
    """The targets of the page's Markdown links and images, outside code blocks."""
    prose = FENCE.sub('', page.read_text())
    return re.findall(r'\]\(([^)\s]+)\)', prose)


def test_the_manual_has_pages():
    assert len(PAGES) > 5, [ids(p) for p in PAGES]


@pytest.mark.parametrize('page', PAGES, ids=ids)
def test_every_relative_link_resolves_to_a_file_and_anchor(page):
    broken = []
    for target in links(page):
        if re.match(r'[a-z]+://|mailto:', target):
            continue
        path, _, anchor = target.partition('#')
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or ROOT not in file.parents:
            broken.append(target)
        elif anchor and file.suffix == '.md' and anchor not in anchors(file):
            broken.append(target)
    assert not broken, broken


@pytest.mark.parametrize('page', PAGES, ids=ids)
def test_every_repository_path_named_exists(page):
    named = {p.rstrip('.,:;') for p in REPO_PATH.findall(page.read_text())}
    missing = []
    for name in sorted(named):
        # a pattern such as `configs/cvt/*.py` or `cvt-{13,21}` names every file it matches
        pattern = re.sub(r'\{[^}]*\}', '*', name)
        if not (list(ROOT.glob(pattern.rstrip('/'))) if '*' in pattern
                else (ROOT / name).exists()):
            missing.append(name)
    assert not missing, missing


@pytest.mark.parametrize('page', PAGES, ids=ids)
def test_every_make_target_named_is_in_the_makefile(page):
    makefile = (ROOT / 'Makefile').read_text()
    targets = set(re.findall(r'^([\w-]+):', makefile, re.M))
    text = page.read_text()
    # in backticks, or as a command in a code block
    named = set(re.findall(r'`make ([\w-]+)', text)) | {
        target for block in FENCE.findall(text)
        for target in re.findall(r'^\s*make ([\w-]+)', block, re.M)}
    assert not named - targets, sorted(named - targets)


@pytest.mark.parametrize('page', PAGES, ids=ids)
def test_every_tool_command_names_an_existing_script(page):
    named = set(re.findall(r'python (tools/[\w/.-]+\.py)', page.read_text()))
    assert not [n for n in named if not (ROOT / n).is_file()], sorted(named)


def test_the_readme_is_an_entry_page():
    assert len(README.read_text()) <= 10_000


@pytest.mark.parametrize('page', [README, ROOT / 'docs' / 'weights.md'], ids=ids)
def test_the_model_zoo_table_is_the_one_zoo_py_renders(page):
    lines = page.read_text().splitlines(keepends=True)
    header = markdown_table().splitlines(keepends=True)[0]
    assert header in lines, 'no model zoo table'
    start = lines.index(header)
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith('|')), len(lines))
    assert ''.join(lines[start:end]) == markdown_table()
