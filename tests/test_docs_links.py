"""The README's and the documentation's internal links resolve (tools/linkcheck.py), and the
check does fail on a broken one."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_linkcheck():
    spec = importlib.util.spec_from_file_location("linkcheck", ROOT / "tools" / "linkcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


linkcheck = _load_linkcheck()


def test_every_internal_link_of_the_readme_and_the_docs_resolves() -> None:
    files = linkcheck.default_files(ROOT)
    assert ROOT / "README.md" in files and ROOT / "docs" / "trust.md" in files
    broken = linkcheck.check(files, ROOT)
    assert not broken, "\n".join(map(str, broken))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small repository: a page with headings, a source file, a README to include from."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "noise.py").write_text("")
    (tmp_path / "se_search" / "space").mkdir(parents=True)
    (tmp_path / "se_search" / "space" / "__init__.py").write_text("")
    (tmp_path / "se_search" / "space" / "keys.py").write_text("")
    (tmp_path / ".gitignore").write_text("*_artifacts/\n")
    (tmp_path / "README.md").write_text(
        "<!-- --8<-- [start:sample] -->\nout\n<!-- --8<-- [end:sample] -->\n"
    )
    (tmp_path / "docs" / "trust.md").write_text(
        "# Trust\n\n## How well the budget ranks\n\n## Performance: SE at `near-zero` cost\n"
    )
    return tmp_path


def _broken(repo: Path, text: str) -> list[str]:
    page = repo / "docs" / "page.md"
    page.write_text(text)
    return [f"{b.target}: {b.reason}" for b in linkcheck.check([page], repo)]


def test_links_anchors_paths_and_snippets_that_resolve_pass(repo: Path) -> None:
    text = (
        "# Page\n\n[trust](trust.md), [ranks](trust.md#how-well-the-budget-ranks),\n"
        "[perf](trust.md#performance-se-at-near-zero-cost), [here](#page), [up](../README.md)\n"
        "[web](https://example.com/nowhere.md) `benchmarks/noise.py`, `space/keys.py`:\n"
        "`benchmarks/*.py` `benchmarks/results_artifacts/` `train/` `~/.cache/x/y`\n\n"
        '--8<-- "README.md:sample"\n\n'
        "```bash\n[not a link](missing.md) `benchmarks/missing.py`\n```\n"
    )
    assert _broken(repo, text) == []


def test_each_kind_of_broken_link_is_reported(repo: Path) -> None:
    text = (
        "# Page\n\n[gone](missing.md) and ![figure](screenshots/gone.png)\n"
        "[anchor](trust.md#no-such-heading) [here](#nowhere) [abs](/docs/trust.md)\n"
        "`benchmarks/gone.py` `space/gone.py` `benchmarks/*.json`\n"
        '--8<-- "README.md:other"\n'
    )
    assert _broken(repo, text) == [
        "missing.md: no such file or folder",
        "screenshots/gone.png: no such file or folder",
        "trust.md#no-such-heading: no heading or id 'no-such-heading' in trust.md",
        "#nowhere: no heading or id 'nowhere' in page.md",
        "/docs/trust.md: an absolute path; link relative to the page instead",
        "benchmarks/gone.py: no such file or folder",
        "space/gone.py: no such file or folder",
        "benchmarks/*.json: matches no file",
        "README.md:other: no section 'other' in README.md",
    ]


def test_the_command_line_exits_1_on_a_broken_link(repo: Path, capsys) -> None:
    page = repo / "docs" / "page.md"
    page.write_text("[gone](missing.md)\n")
    assert linkcheck.main([str(page)]) == 1
    assert "missing.md: no such file or folder" in capsys.readouterr().out
