"""The README and docs/ say only what the code does: their snippets run, their commands parse.

- every ```python block runs as written, in a fresh namespace in a temporary folder that holds a
  tiny trained `best.pt` and its `digits/` dataset (the only files a snippet may assume);
  `<!-- snippet: slow (why) -->` before a block moves it to `make test-slow` (a fast test still
  resolves every name it imports), `<!-- snippet: not run: why -->` skips it (kept rare);
- every `yoloprune ...` command line (in code blocks and inline) parses with the real parser;
- the `usage` blocks of docs/cli.md are the real `--help` (`make docs` rewrites them);
- the analysis excerpts between `<!-- analysis:start -->` and `<!-- analysis:end -->` are lines of
  the real `yoloprune analyze yolov8s.yaml --blocks 1 2 3` report, in order;
- relative links and their #anchors resolve; docs/coverage.md links to the generated results
  instead of copying them, and those results back the README's claim;
- every docstring example under src/yoloprune runs (doctest) in such a folder too.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import doctest
import importlib
import io
import json
import os
import pkgutil
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import yoloprune
from yoloprune.cli import parser as cli

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
UPDATE = os.environ.get("YOLOPRUNE_UPDATE_DOCS") == "1"  # `make docs`: rewrite the generated blocks
HELP_COLUMNS = "100"
NOT_RUN_LIMIT = 2  # marks that skip a snippet must stay rare


@dataclass(frozen=True)
class Block:
    """A fenced code block of a Markdown file and the HTML comment right before it, if any."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    mark: str  # the comment's text, "" when there is none

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        m = re.match(r"^\s*```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        before = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        mark = before[4:-3].strip() if before.startswith("<!--") and before.endswith("-->") else ""
        indent = len(lines[start]) - len(lines[start].lstrip())
        text = "\n".join(line[indent:] for line in lines[start + 1 : end])
        found.append(Block(path, start + 1, lang, text, mark))
        i = end + 1
    return found


ALL_BLOCKS = [b for p in DOCS for b in blocks(p)]
PYTHON = [b for b in ALL_BLOCKS if b.lang == "python"]


# --------------------------------------------------------------------------------------------------
# Python snippets


def _not_run_reason(block: Block) -> str | None:
    m = re.fullmatch(r"snippet: not run: (.+)", block.mark)
    return m.group(1).strip() if m else None


def _is_slow(block: Block) -> bool:
    return re.fullmatch(r"snippet: slow \(.+\)", block.mark) is not None


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with what snippets and docstring examples may assume: `best.pt` (yolov8n trained one
    epoch on 12 digit scenes at 64 px) and its dataset `digits/`."""
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_training import train_baseline

    folder = tmp_path_factory.mktemp("doc-assets")
    best, _ = train_baseline(folder)  # folder/digits, folder/baseline/weights/best.pt
    shutil.copy(best, folder / "best.pt")
    shutil.rmtree(folder / "baseline")
    return folder


@pytest.fixture
def workdir(tmp_path: Path, assets: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh current folder with copies of `assets`."""
    shutil.copy(assets / "best.pt", tmp_path / "best.pt")
    shutil.copytree(assets / "digits", tmp_path / "digits")  # data.yaml's paths are relative to it
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _snippet_params() -> list:
    params = []
    for b in PYTHON:
        marks = []
        if (reason := _not_run_reason(b)) is not None:
            marks.append(pytest.mark.skip(reason=f"marked not run: {reason}"))
        elif _is_slow(b):
            marks.append(pytest.mark.slow)
        params.append(pytest.param(b, id=b.id, marks=marks))
    return params


def test_the_docs_have_python_snippets():
    assert len(PYTHON) >= 5, [b.id for b in PYTHON]


@pytest.mark.parametrize("block", _snippet_params())
def test_python_snippet_runs(block: Block, workdir: Path):
    """The snippet runs as written (an exception fails the test) and defines what it shows."""
    code = compile(block.text, block.id, "exec")
    namespace: dict = {"__name__": "__main__"}
    exec(code, namespace)
    assert set(namespace) - {"__name__", "__builtins__"}, f"{block.id} ran but defined nothing"


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in PYTHON])
def test_python_snippet_imports_and_names_resolve(block: Block):
    """Fast for every snippet, slow ones included: its imports work and every dotted name it reads
    from an imported module exists (`yoloprune.workflows.compare.compare_criteria` after only
    `import yoloprune` does not)."""
    tree = ast.parse(block.text, block.id)
    namespace: dict = {}
    imports = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    exec(compile(ast.Module(body=imports, type_ignores=[]), block.id, "exec"), namespace)
    modules = {k for k, v in namespace.items() if type(v).__name__ == "module"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            chain, base = [], node
            while isinstance(base, ast.Attribute):
                chain.append(base.attr)
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules:
                obj = namespace[base.id]
                for i, attr in enumerate(reversed(chain)):
                    assert hasattr(obj, attr), (
                        f"{block.id}: {'.'.join([base.id, *reversed(chain)][: i + 2])} does not exist"
                    )
                    obj = getattr(obj, attr)
                    if type(obj).__name__ != "module":
                        break


def test_snippets_marked_not_run_are_rare_and_say_why():
    marked = [b for b in PYTHON if b.mark.startswith("snippet:")]
    for b in marked:
        assert _is_slow(b) or _not_run_reason(b), f"{b.id}: unknown mark {b.mark!r}"
    not_run = [b.id for b in PYTHON if _not_run_reason(b) is not None]
    assert len(not_run) <= NOT_RUN_LIMIT, not_run


def test_the_fast_check_catches_a_missing_submodule():
    bad = Block(ROOT / "README.md", 0, "python", "import yoloprune\nyoloprune.yolo.nothing_here.compare", "")
    with pytest.raises(AssertionError, match=r"yoloprune\.yolo\.nothing_here does not exist"):
        test_python_snippet_imports_and_names_resolve(bad)


# --------------------------------------------------------------------------------------------------
# Command lines


def _command_lines() -> list[tuple[str, str, bool]]:
    """(where, command line, complete) for every `yoloprune ...` line of a shell or text block
    (complete: it must parse as it stands) and every inline `yoloprune ...` span (its command and
    flags must exist; spans with [optional], a|b, ... or COMMAND are synopses and are left out)."""
    found = []
    for b in ALL_BLOCKS:
        if b.lang not in ("bash", "sh", "shell", "console", "text"):
            continue
        for k, line in enumerate(b.text.splitlines(), 1):
            line = line.strip()
            if b.lang == "text" or line.startswith("$ "):
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            if line.startswith("yoloprune "):
                found.append((f"{b.id}+{k}", line, True))
    for path in DOCS:
        for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for span in re.findall(r"`(yoloprune [^`]+)`", text):
                if not re.search(r"[\[\]|]|\.\.\.|COMMAND", span):
                    found.append((f"{path.relative_to(ROOT)}:{n}", span, False))
    return found


COMMAND_LINES = _command_lines()


def _parse(line: str) -> tuple[int, str]:
    argv = shlex.split(line, comments=True)[1:]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli._parser().parse_args(argv)
        except SystemExit as e:
            return int(e.code or 0), err.getvalue()
    return 0, ""


def _unknown(line: str) -> list[str]:
    """The words of a (possibly partial) command line that name no command or flag of it."""
    words = shlex.split(line, comments=True)[1:]
    parser = cli._parser()
    while words and (subs := [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]):
        if words[0] not in subs[0].choices:
            return [words[0]]
        parser, words = subs[0].choices[words[0]], words[1:]
    flags = {s for a in parser._actions for s in a.option_strings}
    return [w for w in words if w.startswith("-") and w.split("=")[0] not in flags]


def test_the_docs_have_command_lines():
    assert sum(complete for *_, complete in COMMAND_LINES) >= 25


@pytest.mark.parametrize(("where", "line", "complete"), [pytest.param(*c, id=c[0]) for c in COMMAND_LINES])
def test_command_line_parses(where: str, line: str, complete: bool):
    if complete:
        code, err = _parse(line)
        assert code == 0, f"{where}: `{line}` does not parse: {err.strip()}"
    else:
        assert not _unknown(line), f"{where}: `{line}` names no such command or flag: {_unknown(line)}"


def test_the_parse_check_catches_an_unknown_flag_or_command():
    code, err = _parse("yoloprune prune yolov8n.yaml --ratio 0.5 --no-such-flag --dry-run")
    assert code == 2 and "--no-such-flag" in err
    assert _unknown("yoloprune run --resume --out DIR --no-such-flag") == ["--no-such-flag"]
    assert _unknown("yoloprune data pictures") == ["pictures"]
    assert _unknown("yoloprune data digits --images 10") == []


# --------------------------------------------------------------------------------------------------
# docs/cli.md: generated from the parser

CLI_MD = ROOT / "docs" / "cli.md"
HELP_BLOCK = re.compile(r"<!-- help:(?P<cmd>[a-z ]+) -->\n```text\n(?P<body>.*?)```\n<!-- /help -->", re.S)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every leaf command by its words ("prune", "data digits")."""
    out = {}
    for name, sub in _subparsers(parser).items():
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        out.update({f"{name} {k}": v for k, v in nested[0].choices.items()} if nested else {name: sub})
    return out


def _normal(text: str) -> str:
    """Help text without the line breaks that depend on the Python version's wrapping."""
    return " ".join(text.replace("optional arguments:", "options:").split())


def test_cli_reference_is_the_real_help(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("COLUMNS", HELP_COLUMNS)
    commands = _commands(cli._parser())
    text = CLI_MD.read_text(encoding="utf-8")
    if UPDATE:

        def generated(m: re.Match) -> str:
            return f"<!-- help:{m['cmd']} -->\n```text\n{commands[m['cmd']].format_help()}```\n<!-- /help -->"

        text = HELP_BLOCK.sub(generated, text)
        CLI_MD.write_text(text, encoding="utf-8")
    documented = {m["cmd"]: m["body"] for m in HELP_BLOCK.finditer(text)}
    assert sorted(documented) == sorted(commands), "docs/cli.md needs a section per command"
    stale = [c for c, body in documented.items() if _normal(body) != _normal(commands[c].format_help())]
    assert not stale, f"docs/cli.md's help of {', '.join(stale)} is out of date: run `make docs`"


# --------------------------------------------------------------------------------------------------
# The seed-question excerpts


def _excerpts() -> list[tuple[Path, list[str]]]:
    out = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"<!-- analysis:start -->\n(.*?)<!-- analysis:end -->", text, re.S):
            out.append((path, m.group(1).splitlines()))
    return out


def _unheaded(line: str) -> str:
    return re.sub(r"^#+ ", "", line.strip())


def test_analysis_excerpts_are_lines_of_the_real_report(tmp_path: Path):
    excerpts = _excerpts()
    assert {p.name for p, _ in excerpts} >= {"README.md", "cli.md"}
    out = tmp_path / "analysis.md"
    assert cli.main(["analyze", "yolov8s.yaml", "--blocks", "1", "2", "3", "--out", str(out)]) == 0
    report = [_unheaded(line) for line in out.read_text(encoding="utf-8").splitlines()]
    for path, lines in excerpts:
        at = 0
        for line in filter(None, map(_unheaded, lines)):
            assert line in report[at:], f"{path.name}: not in the report (or out of order): {line[:100]}"
            at = report.index(line, at) + 1


# --------------------------------------------------------------------------------------------------
# Links, coverage, the front door


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


def test_relative_links_and_anchors_resolve():
    broken = []
    for path in DOCS:
        text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            if not resolved.exists():
                broken.append(f"{path.name}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{path.name}: {target} (no such heading)")
    assert not broken


COVERAGE = ROOT / "benchmarks" / "results" / "coverage.json"


def test_coverage_page_links_the_generated_table_instead_of_copying_it():
    page = (ROOT / "docs" / "coverage.md").read_text(encoding="utf-8")
    assert "(../benchmarks/results/coverage.md)" in page
    configs = [r["config"] for r in json.loads(COVERAGE.read_text())["records"]]
    copied = [c for c in configs if re.search(rf"^\|\s*{re.escape(c)}\s*\|", page, re.M)]
    assert not copied, f"docs/coverage.md copies rows of the generated table: {copied[:3]}"


def test_coverage_results_back_the_readme_claim():
    """The README says every shipped config passes: the latest results must say so, for every
    config the installed Ultralytics ships."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from coverage import shipped_configs

    records = json.loads(COVERAGE.read_text())["records"]
    assert [r["config"] for r in records if r["status"] != "pass"] == []
    assert sorted(r["config"] for r in records) == sorted(shipped_configs())


def test_readme_lists_every_command():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text[text.index("## Commands") :].split("\n\n")[1]
    listed = re.findall(r"^\| `([a-z ]+)` \|", table, re.M)
    assert sorted(listed) == sorted(_commands(cli._parser()))


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert 100 <= len(lines) <= 250
    assert "make demo" in text and "make test" in text
    assert all((ROOT / "docs" / name).exists() for name in re.findall(r"\(docs/([\w-]+\.md)", text))


# --------------------------------------------------------------------------------------------------
# Docstring examples

SLOW_DOCTESTS = {  # name -> why it is slow; each function also has fast tests of its own
    "yoloprune.yolo.api.prune": "four prunes of yolov8n, ~5 s (tests/test_prune_yolo.py)",
    "yoloprune.workflows.evaluate.bench": "two ONNX exports and validations, ~4 s (tests/test_bench.py)",
    "yoloprune.yolo.deploy.as_timed": "an OpenVINO INT8 export and validation, ~15 s (tests/test_deploy.py)",
    "yoloprune.reports.costs.block_costs": "a prune, ~2 s (the dry-run table in tests/test_allocation.py)",
    "yoloprune.workflows.schedule.check_recipe": "a dry run, ~2 s (every run of tests/test_schedule.py)",
    "yoloprune.yolo.api.verify": "a prune, a save and a verify, ~3 s (verify in tests/test_cli.py)",
    "yoloprune": "a prune and a save, ~2 s (the README's quick start does the same)",
}


UNIMPORTABLE: dict[str, str] = {}  # module -> error: reported by a test, not at collection


def _docstring_tests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = []

    def failed(name: str) -> None:
        UNIMPORTABLE[name] = repr(sys.exc_info()[1])

    names = ["yoloprune", *(i.name for i in pkgutil.walk_packages(yoloprune.__path__, "yoloprune.", failed))]
    for name in names:
        try:
            module = importlib.import_module(name)
        except Exception as e:
            UNIMPORTABLE[name] = repr(e)
            continue
        found += [t for t in finder.find(module, name) if t.examples]
    return sorted(found, key=lambda t: t.name)


DOCTESTS = _docstring_tests()


def test_every_module_imports():
    assert UNIMPORTABLE == {}


def test_the_code_has_docstring_examples():
    assert len(DOCTESTS) >= 30


@pytest.mark.parametrize(
    "test",
    [
        pytest.param(t, id=t.name, marks=[pytest.mark.slow] if t.name in SLOW_DOCTESTS else [])
        for t in DOCTESTS
    ],
)
def test_docstring_example(test: doctest.DocTest, workdir: Path):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    out = io.StringIO()
    result = runner.run(test, out=out.write, clear_globs=False)
    assert result.failed == 0, out.getvalue()
