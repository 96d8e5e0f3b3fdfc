"""The documentation: README.md and docs/ as users read them.

- every relative link points at a file that exists, and every `#anchor` (on such a link
  or within a page) names a heading of the target page, slugified as MkDocs' default
  table of contents does;
- every fenced ```python block runs, in a fresh directory, with this interpreter (a block
  right after the line `<!-- no-run -->` is skipped: for code that needs an outside
  service);
- `mkdocs build --strict` succeeds and the built site loads nothing from the network;
- nothing points at the specification folder outside the repository.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
NO_RUN = "<!-- no-run -->"
BLOCK_TIMEOUT_S = 300

HAS_MKDOCS = importlib.util.find_spec("mkdocs") is not None
needs_mkdocs = pytest.mark.skipif(
    not HAS_MKDOCS,
    reason="mkdocs is not installed: pip install -e '.[docs]' (or make docs, which does)",
)


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name


# --- reading Markdown ----------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    no_run: bool

    @property
    def id(self) -> str:
        return f"{rel(self.path)}:{self.line}"


def split_fences(text: str) -> tuple[list[str], list[Block]]:
    """The lines outside fenced code (fenced lines blanked, so numbering holds) and the
    fenced blocks, with whether the line before each (skipping blank ones) is NO_RUN."""
    lines = text.splitlines()
    prose: list[str] = []
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            prose.append(lines[i])
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        indent = len(lines[i]) - len(lines[i].lstrip(" "))
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            line = lines[i]
            body.append(line[indent:] if line[:indent].strip() == "" else line)
            i += 1
        before = [line for line in lines[:start] if line.strip()]
        no_run = bool(before) and before[-1].strip() == NO_RUN
        blocks.append(Block(Path(), start + 1, lang, "\n".join(body) + "\n", no_run))
        prose.extend([""] * (i - start + 1))
        i += 1
    return prose, blocks


def blocks_of(path: Path) -> list[Block]:
    _, blocks = split_fences(path.read_text(encoding="utf-8"))
    return [Block(path, b.line, b.lang, b.code, b.no_run) for b in blocks]


def slugify(text: str) -> str:
    """MkDocs' default heading id (Python-Markdown's toc extension)."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def heading_text(raw: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", raw)  # links keep their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    return text.replace("`", "").replace("*", "").strip().rstrip("#").strip()


def anchors(path: Path) -> set[str]:
    """The ids of a page's headings, with the `_1`, `_2` suffixes of repeated ones."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    seen: set[str] = set()
    for line in prose:
        m = re.match(r"^ {0,3}#{1,6}\s+(.*)$", line)
        if not m:
            continue
        base = slugify(heading_text(m.group(1)))
        slug, n = base, 0
        while slug in seen:
            n += 1
            slug = f"{base}_{n}"
        seen.add(slug)
    return seen


_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every inline link or image outside code."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    found = []
    for n, line in enumerate(prose, 1):
        for m in _LINK.finditer(_INLINE_CODE.sub("", line)):
            found.append((n, m.group(1)))
    return found


# --- (a) links and anchors -------------------------------------------------------------

_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def broken_links(path: Path) -> list[str]:
    problems = []
    for line, target in links(path):
        where = f"{rel(path)}:{line}: {target}"
        if _EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{where}: no such file")
            continue
        if anchor:
            if dest.is_dir() or dest.suffix != ".md":
                problems.append(f"{where}: an anchor on something that is not a page")
            elif unquote(anchor) not in anchors(dest):
                problems.append(f"{where}: no heading with this anchor in {rel(dest)}")
    return problems


@pytest.mark.parametrize("path", doc_files(), ids=rel)
def test_links_and_anchors_resolve(path: Path) -> None:
    assert broken_links(path) == []


def test_readme_is_a_front_page_into_docs() -> None:
    readme = ROOT / "README.md"
    assert len(readme.read_text(encoding="utf-8").splitlines()) < 200
    targets = {t.partition("#")[0] for _, t in links(readme)}
    pages = {f"docs/{p.name}" for p in DOCS.glob("*.md")}
    assert "docs/index.md" in targets
    assert len(targets & pages) >= 5, "README links into the documentation"


def test_link_check_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(
        "# Title\n\n## Some `code`: here\n\n"
        "[ok](b.md#second) [ok](#some-code-here) [ok](b.md) [web](https://example.org/x)\n"
        "[gone](missing.md) [bad anchor](b.md#nope) [bad here](#nope)\n"
        "`[not a link](missing.md)`\n\n```md\n[in code](missing.md)\n```\n"
    )
    (tmp_path / "b.md").write_text("# First\n\n## Second\n")
    problems = broken_links(tmp_path / "a.md")
    assert [p.split(": ")[1] for p in problems] == ["missing.md", "b.md#nope", "#nope"]


def test_slugify_matches_mkdocs_toc() -> None:
    assert slugify(heading_text("Drafting new terms: check, test, impact")) == (
        "drafting-new-terms-check-test-impact"
    )
    assert slugify(heading_text("`ledger verify`")) == "ledger-verify"
    if importlib.util.find_spec("markdown") is not None:
        from markdown.extensions.toc import slugify as toc_slugify

        for text in ("Valid time and record time", "Events: a hash chain per user"):
            assert slugify(text) == toc_slugify(text, "-")


# --- (b) Python blocks run ------------------------------------------------------------

PYTHON_BLOCKS = [b for p in doc_files() for b in blocks_of(p) if b.lang in ("python", "py")]


def test_docs_show_runnable_python() -> None:
    runnable = [b for b in PYTHON_BLOCKS if not b.no_run]
    assert len(runnable) >= 2, "the docs show the Python API in runnable snippets"


def test_no_run_marker_skips_only_the_next_block() -> None:
    text = (
        "Intro.\n\n<!-- no-run -->\n```python\nfrom kafka import KafkaProducer\n```\n\n"
        "```python\nprint(1)\n```\n\n```sh\nledger --help\n```\n"
    )
    _, blocks = split_fences(text)
    assert [(b.lang, b.no_run) for b in blocks] == [
        ("python", True),
        ("python", False),
        ("sh", False),
    ]


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.id)
def test_python_block_runs(block: Block, tmp_path: Path) -> None:
    if block.no_run:
        pytest.skip(f"marked {NO_RUN}")
    script = tmp_path / "snippet.py"
    script.write_text(block.code, encoding="utf-8")
    # The checkout first, so that a snippet imports this tree's `ledger`.
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )
    assert done.returncode == 0, (
        f"{block.id} exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}"
        f"\n--- stderr\n{done.stderr[-3000:]}"
    )


# --- (c) the site builds and stays offline ----------------------------------------------

_SCRIPT_SRC = re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']?\s*(?:https?:)?//", re.I)
_LINK_TAG = re.compile(r"<link\b[^>]*>", re.I)
_HREF_REMOTE = re.compile(r"\bhref\s*=\s*[\"']?\s*(?:https?:)?//", re.I)
_CSS_REMOTE = re.compile(
    r"@import\s+(?:url\()?\s*[\"']?\s*(?:https?:)?//|url\(\s*[\"']?\s*(?:https?:)?//", re.I
)


def remote_loads(site: Path) -> list[str]:
    found = []
    for page in sorted(site.rglob("*.html")):
        html = page.read_text(encoding="utf-8", errors="replace")
        if _SCRIPT_SRC.search(html):
            found.append(f"{page.relative_to(site)}: <script src> from the network")
        for tag in _LINK_TAG.findall(html):
            if _HREF_REMOTE.search(tag) and "canonical" not in tag.lower():
                found.append(f"{page.relative_to(site)}: {tag}")
        for style in re.findall(r"<style\b[^>]*>(.*?)</style>", html, re.S | re.I):
            if _CSS_REMOTE.search(style):
                found.append(f"{page.relative_to(site)}: remote url() in a <style>")
    for css in sorted(site.rglob("*.css")):
        if _CSS_REMOTE.search(css.read_text(encoding="utf-8", errors="replace")):
            found.append(f"{css.relative_to(site)}: @import or url() from the network")
    return found


@pytest.fixture(scope="module")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return site


@needs_mkdocs
def test_site_builds_strict(built_site: Path) -> None:
    assert (built_site / "index.html").is_file()
    for page in sorted(DOCS.glob("*.md")):
        name = "index.html" if page.stem == "index" else f"{page.stem}.html"
        built = [built_site / name, built_site / page.stem / "index.html"]
        assert any(p.is_file() for p in built), f"{rel(page)} was not built"


@needs_mkdocs
def test_site_loads_nothing_from_the_network(built_site: Path) -> None:
    assert remote_loads(built_site) == []


def test_offline_check_catches_remote_loads(tmp_path: Path) -> None:
    (tmp_path / "a.html").write_text(
        '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">'
        '<script src="https://cdn.example/x.js"></script>'
    )
    (tmp_path / "b.css").write_text("@import url(https://fonts.example/x.css);")
    assert len(remote_loads(tmp_path)) == 3


def test_mkdocs_config_is_offline() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert re.search(r"^\s+name:\s*material\s*$", config, re.M)
    assert re.search(r"^\s+font:\s*false\s*$", config, re.M)
    assert not re.search(r"^\s*extra_(?:javascript|css):", config, re.M)


# --- (d) no pointers outside the repository ---------------------------------------------

_SPEC_PATH = re.compile(r"../shared")  # as `grep -rn "../shared"` reads it
_SPEC_FILES = re.compile(r"\b(?:RULES|AUDIT|ARCHITECTURE|PRIVACY)\.md\b")


@pytest.mark.parametrize("path", doc_files(), ids=rel)
def test_no_link_to_the_spec_folder(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    hits = [
        f"{rel(path)}:{n}: {line.strip()}"
        for n, line in enumerate(text.splitlines(), 1)
        if _SPEC_PATH.search(line) or _SPEC_FILES.search(line)
    ]
    assert hits == []
