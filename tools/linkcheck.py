"""Check that every internal link of the README and the documentation pages resolves.

In README.md and docs/**/*.md (outside fenced code blocks):

- a relative link or image, ``[text](path)``, ``[text](path#anchor)``, ``[ref]: path`` or an
  HTML ``href``/``src``, must name a file or folder of the repository;
- an ``#anchor``, alone or after a Markdown page, must name a heading of that page (its slug
  as MkDocs writes it, or as GitHub does), an ``{#id}`` or an ``<a id>``;
- a code span that names a repository path (```benchmarks/noise.py```, or inside the package
  ```evaluation/setup.py```) must exist; a ``*`` in it must match a file;
- a snippet that the site includes (``--8<-- "FILE:SECTION"``) must exist, with its section.

External links (``http:``, ``https:``, ``mailto:``) are not checked: there is no internet
here. Usage: ``python tools/linkcheck.py [FILE ...]`` (default: the README and docs/); exit
status 1, with one line per broken link, if any is broken.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The repository's top-level folders a code span may name a path in.
REPO_DIRS = frozenset(
    {".ci", "benchmarks", "dashboards", "docs", "se_search", "search_spaces", "tests", "tools"}
)

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"
)
_REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_HTML_LINK = re.compile(r"\b(?:href|src)=\"([^\"]+)\"")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_ATTR_ID = re.compile(r"\{[^}]*#([\w-]+)[^}]*\}\s*$")
_HTML_ID = re.compile(r"<a\s+(?:[^>]*\s)?(?:id|name)=\"([^\"]+)\"")
_SNIPPET = re.compile(r"^\s*-+8<-+\s+\"([^\"]+)\"\s*$")
_PATH_WORD = re.compile(r"^[\w.*-]+(?:/[\w.*-]*)+$")


@dataclass(frozen=True)
class Broken:
    """One link that does not resolve: where it is, what it names, and why it fails."""

    file: Path
    line: int
    target: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.target}: {self.reason}"


def default_files(root: Path = ROOT) -> list[Path]:
    """The README and every page of the documentation."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def _prose_lines(text: str) -> Iterable[tuple[int, str]]:
    """The lines outside fenced code blocks, numbered from 1."""
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        opened = _FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is None:
            yield number, line


def _plain(heading: str) -> str:
    """A heading's text as rendered: links to their text, no code or emphasis marks."""
    heading = _ATTR_ID.sub("", heading)
    heading = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    heading = re.sub(r"<[^>]+>", "", heading)
    return heading.replace("`", "").replace("**", "").replace("__", "")


def mkdocs_slug(text: str) -> str:
    """Python-Markdown's ``toc`` slug, which MkDocs uses."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def github_slug(text: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a Markdown file defines, as MkDocs and as GitHub name them."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        found.update(_HTML_ID.findall(line))
        heading = _HEADING.match(line)
        if not heading:
            continue
        explicit = _ATTR_ID.search(heading.group(2))
        if explicit:
            found.add(explicit.group(1))
        text = _plain(heading.group(2))
        for slug in {mkdocs_slug(text), github_slug(text)}:
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}_{count}")  # MkDocs' duplicates
            found.add(slug if count == 0 else f"{slug}-{count}")  # GitHub's
    return found


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _check_link(source: Path, target: str, root: Path, cache: dict[Path, set[str]]) -> str | None:
    """Why a link's target does not resolve, or None if it does."""
    if _SCHEME.match(target):
        return None  # external (http, https, mailto): not checked offline
    if target.startswith("/"):
        return "an absolute path; link relative to the page instead"
    path_part, _, anchor = target.partition("#")
    page = source if not path_part else (source.parent / path_part)
    if not page.exists():
        return "no such file or folder"
    if not _inside(page, root):
        return "outside the repository"
    if anchor and page.is_file() and page.suffix == ".md":
        if page not in cache:
            cache[page] = anchors(page)
        if anchor not in cache[page]:
            return f"no heading or id {anchor!r} in {page.name}"
    return None


def _repo_path(word: str, root: Path) -> str | None:
    """The repository path (relative to ``root``) a code span's word names, if it names one."""
    word = word.rstrip(":,;.)'\"")
    if not _PATH_WORD.match(word):
        return None
    first = word.split("/", 1)[0]
    if first in REPO_DIRS:
        return word
    if (root / "se_search" / first / "__init__.py").is_file():  # a path inside the package
        return f"se_search/{word}"
    return None


def _ignored(relative: str, root: Path) -> bool:
    """Whether ``.gitignore`` names the path: something a run writes, not part of the repo."""
    ignore = root / ".gitignore"
    if not ignore.is_file():
        return False
    parts = relative.rstrip("/").split("/")
    folders = parts if relative.endswith("/") else parts[:-1]
    for pattern in ignore.read_text(encoding="utf-8").splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith(("#", "!")):
            continue
        if pattern.endswith("/"):  # a folder, at any depth
            if any(fnmatch(folder, pattern.strip("/")) for folder in folders):
                return True
        elif fnmatch("/".join(parts), pattern.lstrip("/")) or fnmatch(parts[-1], pattern):
            return True
    return False


def _check_path(relative: str, root: Path) -> str | None:
    if _ignored(relative, root):
        return None  # written by a run or a build (.gitignore), not kept in the repository
    if "*" in relative:
        return None if any(root.glob(relative)) else "matches no file"
    return None if (root / relative).exists() else "no such file or folder"


def _check_snippet(spec: str, root: Path) -> str | None:
    name, _, section = spec.partition(":")
    path = root / name
    if not path.is_file():
        return "no such file to include"
    if section and f"--8<-- [start:{section}]" not in path.read_text(encoding="utf-8"):
        return f"no section {section!r} in {name}"
    return None


def check(files: Iterable[Path], root: Path = ROOT) -> list[Broken]:
    """Every broken internal link, repository path and snippet in ``files``."""
    broken: list[Broken] = []
    cache: dict[Path, set[str]] = {}
    for file in files:
        shown = file.relative_to(root) if _inside(file, root) else file
        for number, line in _prose_lines(file.read_text(encoding="utf-8")):
            snippet = _SNIPPET.match(line)
            if snippet:
                reason = _check_snippet(snippet.group(1), root)
                if reason:
                    broken.append(Broken(shown, number, snippet.group(1), reason))
                continue
            spans = [m.group(2) for m in _CODE_SPAN.finditer(line)]
            prose = _CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
            targets = [*_INLINE_LINK.findall(prose), *_HTML_LINK.findall(prose)]
            definition = _REFERENCE_DEF.match(prose)
            if definition:
                targets.append(definition.group(1))
            for target in targets:
                reason = _check_link(file, target, root, cache)
                if reason:
                    broken.append(Broken(shown, number, target, reason))
            for word in (w for span in spans for w in span.split()):
                relative = _repo_path(word, root)
                reason = relative and _check_path(relative, root)
                if reason:
                    broken.append(Broken(shown, number, word, reason))
    return broken


def main(argv: list[str]) -> int:
    files = [Path(a).resolve() for a in argv] or default_files()
    broken = check(files)
    for item in broken:
        print(item)
    if broken:
        print(f"linkcheck: {len(broken)} broken in {len(files)} files", file=sys.stderr)
        return 1
    print(f"linkcheck: every internal link of {len(files)} files resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
