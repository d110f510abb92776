"""README.md, the manual in docs/ and the config families' READMEs point at what exists:
links resolve; the files, make targets and tools they name are there, in prose and in the
folder trees of code blocks; the package tree of docs/layout.md lists every module; the model
zoo table is the one configs/cvt/metafile.yml gives; every config is in its family's README
and metafile."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / 'README.md'
FAMILIES = ('cvt', 'mask_rcnn', 'upernet')
PAGES = [README, *sorted((ROOT / 'docs').glob('*.md')),
         *(ROOT / 'configs' / family / 'README.md' for family in FAMILIES)]
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


def markdown_table() -> str:
    """The model zoo table of README.md and docs/weights.md, from configs/cvt/metafile.yml."""
    models = yaml.safe_load((ROOT / 'configs' / 'cvt' / 'metafile.yml').read_text())['Models']
    lines = ['| official file | hub repository | arch | resolution | pretraining '
             '| ImageNet-1k top-1 (official) | evaluate with |',
             '|---|---|---|---|---|---|---|']
    for model in (m for m in models if m.get('Weights')):
        repo = model['Weights'][len('hf://'):]
        meta = model['Metadata']
        pretraining = ('ImageNet-22k, fine-tuned on 1k' if 'ImageNet-21k' in
                       meta['Training Data'] else 'ImageNet-1k')
        lines.append(f"| `{meta['Official File']}` | [`{repo}`](https://huggingface.co/{repo}) | "
                     f"{model['Name'].split('_')[0]} | {meta['Resolution']} | {pretraining} | "
                     f"{model['Results'][0]['Metrics']['Top 1 Accuracy']} | `{model['Config']}` |")
    return '\n'.join(lines) + '\n'


@pytest.mark.parametrize('page', [README, ROOT / 'docs' / 'weights.md'], ids=ids)
def test_the_model_zoo_table_is_the_metafiles(page):
    lines = page.read_text().splitlines(keepends=True)
    header = markdown_table().splitlines(keepends=True)[0]
    assert header in lines, 'no model zoo table'
    start = lines.index(header)
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith('|')), len(lines))
    assert ''.join(lines[start:end]) == markdown_table()


@pytest.mark.parametrize('family', FAMILIES)
def test_every_config_of_a_family_is_in_its_readme_and_metafile(family):
    folder = ROOT / 'configs' / family
    configs = {p.name for p in folder.glob('*.py')}
    metafile = yaml.safe_load((folder / 'metafile.yml').read_text())
    named = {Path(m['Config']).name for m in metafile['Models']}
    assert named == configs
    assert all((ROOT / m['Config']).is_file() for m in metafile['Models'])
    readme = (folder / 'README.md').read_text()
    assert [c for c in sorted(configs) if f']({c})' not in readme] == []
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())['Import']
    assert f'configs/{family}/metafile.yml' in index


#: A code block that is a folder tree: its first line names a folder of the repository.
TREE = re.compile(r'^```\n((?:cvt_backbone|configs|tools|tests|docs)/.*?)^```', re.M | re.S)
FILE = re.compile(r'[\w.-]+\.(?:py|sh|txt|yml|md|toml)\b')


def tree_paths(page: Path) -> list[tuple[str, list[str]]]:
    """Every entry of the page's folder trees, as a repository path, with the file names its
    description lists (``get_flops.py (flops.py)`` under ``analysis_tools/``)."""
    entries = []
    for block in TREE.findall(page.read_text()):
        stack: list[str] = []
        for line in block.splitlines():
            if not line.strip():
                continue
            depth = (len(line) - len(line.lstrip())) // 2
            name, _, rest = line.strip().partition(' ')
            stack = stack[:depth] + [name.rstrip('/')]
            entries.append(('/'.join(stack), FILE.findall(rest) if name.endswith('/') else []))
    return entries


@pytest.mark.parametrize('page', PAGES, ids=ids)
def test_every_path_of_a_folder_tree_exists(page):
    missing = []
    for path, files in tree_paths(page):
        if not (ROOT / path).exists():
            missing.append(path)
        missing += [f'{path}/{f}' for f in files if not list((ROOT / path).rglob(f))]
    assert not missing, missing


def test_the_layout_page_lists_every_module_of_the_package():
    listed = {path for path, _ in tree_paths(ROOT / 'docs' / 'layout.md')
              if path.startswith('cvt_backbone/') and path.endswith('.py')}
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / 'cvt_backbone').rglob('*.py')}
    assert listed == modules
