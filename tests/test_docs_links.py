"""The documentation a fresh clone gets is complete: no link leaves the repository or points nowhere.

The layout and the contracts used to live outside the repository (a sibling `shared/` folder a clone
does not have); they are docs/architecture.md and docs/contracts.md now. This fails when a tracked
file points outside again, names the old upper-case documents, mentions a docs/ file that does not
exist, or has a relative Markdown link (or #anchor) that resolves to nothing.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Spelled in pieces so this file does not match itself.
OUTSIDE = ("../" + "shared/", "shared/" + "ARCHITECTURE", "shared/" + "CONTRACTS")
OLD_NAMES = ("ARCHITECTURE" + ".md", "CONTRACTS" + ".md")
TEXT_SUFFIXES = {".md", ".py", ".toml", ".txt", ".cfg", ".yml", ".yaml", ".json", ".csv", ".sh", ""}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
DOCS_MENTION = re.compile(r"(?<![\w/.-])((?:\.\./)*docs/[\w./-]+\.md)")
SKIP_DIRS = {".git", ".venv", "__pycache__", ".ruff_cache", ".pytest_cache", "node_modules"}


def tracked_files() -> list[Path]:
    """The files git tracks (a checkout without git: every file outside caches and venvs)."""
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        files = [ROOT / line for line in out.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in ROOT.rglob("*") if p.is_file() and not SKIP_DIRS & set(p.relative_to(ROOT).parts)]
    return [p for p in files if p.suffix in TEXT_SUFFIXES and p.is_file()]


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: Path) -> set[str]:
    lines = markdown.read_text(encoding="utf-8").splitlines()
    return {slug(line.lstrip("#")) for line in lines if line.startswith("#")}


def _broken_link(source: Path, target: str) -> str | None:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
        return None  # a URL (https:, mailto:): not a file of ours
    path_part, _, anchor = target.partition("#")
    resolved = (source.parent / path_part).resolve() if path_part else source
    if not resolved.exists():
        return f"{target}: no such file"
    if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
        return f"{target}: no heading #{anchor} in {resolved.name}"
    return None


def test_the_docs_the_links_name_exist():
    assert (ROOT / "docs" / "architecture.md").is_file() and (ROOT / "docs" / "contracts.md").is_file()
    problems = []
    for file in tracked_files():
        if file == Path(__file__).resolve():
            continue
        text = file.read_text(encoding="utf-8", errors="replace")
        rel = file.relative_to(ROOT)
        problems += [f"{rel}: points outside the repository ({bad})" for bad in OUTSIDE if bad in text]
        problems += [f"{rel}: names {old}, which is docs/ now" for old in OLD_NAMES if old in text]
        for mention in DOCS_MENTION.findall(text):
            here = (file.parent / mention).resolve()
            from_root = (ROOT / mention.lstrip("./")).resolve()
            if not here.exists() and not from_root.exists():
                problems.append(f"{rel}: mentions {mention}, which does not exist")
        if file.suffix == ".md":
            for target in LINK.findall(text):
                broken = _broken_link(file, target)
                if broken:
                    problems.append(f"{rel}: link {broken}")
    assert problems == []


def test_the_link_check_finds_what_it_should(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Finance: fraud detection\n\n[ok](page.md#finance-fraud-detection) [bad](gone.md)\n")
    assert _broken_link(page, "page.md#finance-fraud-detection") is None
    assert _broken_link(page, "page.md#nowhere") is not None
    assert _broken_link(page, "gone.md") is not None
    assert _broken_link(page, "https://flower.ai") is None


def test_every_result_file_is_indexed_and_holds_its_run():
    """benchmarks/results/: one JSON per run with its numbers, date, commands and commit, all indexed."""
    import json

    results = ROOT / "benchmarks" / "results"
    index = (results / "README.md").read_text(encoding="utf-8")
    files = sorted(results.glob("*.json"))
    assert files
    for file in files:
        run = json.loads(file.read_text(encoding="utf-8"))
        assert run["id"] == file.stem, file.name
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", run["date"]) and file.name.startswith(run["date"]), file.name
        assert isinstance(run["commands"], list) and (run["commit"] or run["recorded_in_commit"]), file.name
        assert run["tables"] or run["notes"], file.name
        for table in run["tables"]:
            assert all(len(row) == len(table["columns"]) for row in table["rows"]), (file.name, table["caption"])
        assert f"]({file.name})" in index, f"{file.name} is not in benchmarks/results/README.md"
