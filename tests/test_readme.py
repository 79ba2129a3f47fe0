"""The README's commands still work (and those of the pages under docs/): every `ganforge ...` line parses, every
setting it names exists and takes the value shown, and every benchmark command names flags, presets and
settings that exist. Docs drift when a flag or setting is renamed; a user copies the README first."""
from __future__ import annotations

import ast
import importlib
import re
import shlex
from pathlib import Path

import pytest

import ganforge
from ganforge import plugins
from ganforge.cli import _config_from_args, build_parser, main
from ganforge.config import load_config, preset_names
from ganforge.data import DATASETS
from ganforge.errors import UserError
from ganforge.losses import LOSSES
from ganforge.models import DISCRIMINATORS, GENERATORS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# docs/ holds the README's longer measurement logs, whose commands a user copies as well
PAGES = README + "".join("\n" + page.read_text(encoding="utf-8") for page in sorted((ROOT / "docs").glob("*.md")))


def _clean(line: str) -> str:
    """A shell line as a user types it: no trailing comment, no redirection, no optional `[...]` or `...`."""
    line = re.split(r"\s#\s", line)[0]
    line = re.split(r"\s[>|]\s", line)[0]
    line = re.sub(r"(?<!=)\[[^\]]*\]", "", line).replace("...", "")  # `key=[a,b]` is a TOML list, kept
    return " ".join(line.split())


def _joined(block: str) -> list[str]:
    """A code block's lines, a line ending in a backslash joined with the next."""
    return block.replace("\\\n", " ").splitlines()


def _placeholder(word: str) -> bool:
    """RUN, DATA_ROOT, P, KEY=VALUE: a name the reader fills in."""
    return bool(re.fullmatch(r"[A-Z][A-Z_]*(=[A-Z_]+)?", word))


def readme_files() -> dict[str, str]:
    """Files the README spells out in a code block whose first line is `# NAME.py`."""
    blocks = re.findall(r"^```python\n# ([\w.]+\.py)\n(.*?)^```", README, re.S | re.M)
    return {name: body for name, body in blocks}


def fenced_commands() -> list[str]:
    """`ganforge ...` lines of the README's code blocks (`torchrun ... -m ganforge ...` from `ganforge` on)."""
    commands = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", PAGES, re.S | re.M):
        for line in _joined(block):
            line = _clean(line)
            if line.startswith("ganforge "):
                commands.append(line)
            elif line.startswith("torchrun ") and " -m ganforge " in line:
                commands.append("ganforge " + line.split(" -m ganforge ", 1)[1])
    return commands


def benchmark_commands() -> list[str]:
    """`python benchmarks/NAME.py ...` in code blocks and in inline code, which may wrap over lines."""
    found = re.findall(r"`(python benchmarks/[^`]+)`", PAGES)
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", PAGES, re.S | re.M):
        found += [line for line in _joined(block) if line.startswith("python benchmarks/")]
    return [_clean(command) for command in found]


COMMANDS = fenced_commands()
BENCHMARK_COMMANDS = benchmark_commands()


def test_the_readme_has_commands_to_check() -> None:
    # the extraction itself: a README reformatted so that nothing is found must not pass silently
    assert len(COMMANDS) >= 40
    assert len(BENCHMARK_COMMANDS) >= 30
    assert "ganforge train --preset mnist-mlp-bn --out runs" in COMMANDS
    assert "my_nets.py" in readme_files()
    # and the pages under docs/: a command only docs/stacked-mnist.md gives
    assert any('--row "stacked-dcgan-fast loss.lecam=0.3"' in command for command in BENCHMARK_COMMANDS)


@pytest.fixture
def readme_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's plugin files written into a working directory of their own; what they register is gone after."""
    for registry in (GENERATORS, DISCRIMINATORS, LOSSES, DATASETS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    monkeypatch.setattr(plugins, "_loaded", [])
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)
    for name, body in readme_files().items():
        (tmp_path / name).write_text(body, encoding="utf-8")
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses_and_its_settings_are_valid(command: str, capsys: pytest.CaptureFixture,
                                                          readme_plugins: None) -> None:
    words = shlex.split(command)[1:]
    try:
        args = build_parser().parse_args(words)
    except SystemExit as exit_:
        if exit_.code == 0:  # --version, --help
            return
        pytest.fail(f"{command!r} does not parse: {capsys.readouterr().err.strip()} (exit {exit_.code})")
    if args.command in ("train", "settings") and args.config is None and getattr(args, "resume", None) is None:
        try:
            plugins.load_plugins([*args.plugins, *args.command_plugins])
            _config_from_args(args)
        except UserError as error:
            pytest.fail(f"{command!r}: {error}")


def _declared_flags(script: Path) -> set[str]:
    """The options a benchmark script declares, with those of the sibling scripts it imports from (their
    shared option helpers)."""
    text = script.read_text(encoding="utf-8")
    flags = set(re.findall(r"add_argument\(\s*\"(--[a-z0-9-]+)\"", text))
    for name in re.findall(r"^from (\w+) import", text, flags=re.MULTILINE):
        sibling = script.parent / f"{name}.py"
        if sibling.is_file() and sibling != script:
            flags |= _declared_flags(sibling)
    return flags


def _options(words: list[str]) -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    for i, word in enumerate(words):
        if word.startswith("--"):
            flag, _, value = word.partition("=")
            if not value and i + 1 < len(words) and not words[i + 1].startswith("--"):
                value = words[i + 1]
            options.setdefault(flag, []).append(value)
    return options


@pytest.mark.parametrize("command", BENCHMARK_COMMANDS)
def test_readme_benchmark_command_names_what_exists(command: str) -> None:
    words = shlex.split(command)
    script = ROOT / words[1]
    assert script.is_file(), f"{command!r}: no {words[1]}"
    options = _options(words[2:])
    unknown = set(options) - _declared_flags(script) - {"--help"}
    assert not unknown, f"{command!r}: {script.name} has no {', '.join(sorted(unknown))}"
    shared = options.get("--set", [])
    presets = [p for value in options.get("--presets", []) for p in value.split(",") if p and not _placeholder(p)]
    for preset in presets:
        assert preset in preset_names(), f"{command!r}: no preset {preset!r}"
    rows = [[word for word in shlex.split(row) if not _placeholder(word)] for row in options.get("--row", [])]
    for preset, *overrides in [[p] for p in presets] + rows:
        try:
            load_config(preset, overrides=[*shared, *overrides])
        except UserError as error:
            pytest.fail(f"{command!r}: {preset} {' '.join(overrides)}: {error}")


def test_extraction_reads_comments_options_and_wrapped_lines() -> None:
    assert _clean("ganforge sample RUN --n 64 --out grid.png [--seed 7]   # a grid") == \
        "ganforge sample RUN --n 64 --out grid.png"
    assert _clean("ganforge settings --preset mnist-dcgan --changed > my.toml") == \
        "ganforge settings --preset mnist-dcgan --changed"
    assert _options(shlex.split('--kimg 60 --row "p a=1" --row "p b=2" --seeds=0')) == \
        {"--kimg": ["60"], "--row": ["p a=1", "p b=2"], "--seeds": ["0"]}


def test_readme_plugin_example_builds_its_networks(readme_plugins: None, capsys: pytest.CaptureFixture) -> None:
    # the README's own my_nets.py, through the README's command: the nets build and the data is there
    command = next(c for c in COMMANDS if "--plugin my_nets.py" in c and c.startswith("ganforge train"))
    assert main([*shlex.split(command)[1:], "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert 'g = "linear"' in out and 'd = "linear"' in out
    assert not Path("runs").exists()  # a dry run writes nothing


def test_readme_python_compiles_and_names_what_exists() -> None:
    blocks = re.findall(r"^```python\n(.*?)^```", README, re.S | re.M)
    assert len(blocks) >= 2
    for block in blocks:
        tree = ast.parse(block)  # a SyntaxError names the line
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ganforge":
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"README: from {node.module} import {alias.name}: no such name"
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id == "ganforge"):
                assert hasattr(ganforge, node.attr), f"README: ganforge.{node.attr} does not exist"


def _anchor(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _prose(markdown: str) -> str:
    """Markdown without its code blocks, whose `# comments` are not headings and `[x](y)` not links."""
    return re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)


def _links(markdown: str) -> list[str]:
    """Targets of `[text](target)` and `<img src="target">` outside code blocks; link text may wrap."""
    prose = _prose(markdown)
    targets = re.findall(r"\]\(([^)\s]+)\)", prose) + re.findall(r'<img src="([^"]+)"', prose)
    return [target for target in targets if not re.match(r"[a-z]+:", target)]


DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_doc_links_lead_to_files_and_headings_that_exist(doc: Path) -> None:
    for target in _links(doc.read_text(encoding="utf-8")):
        path, _, fragment = target.partition("#")
        linked = doc.parent / path if path else doc
        assert linked.exists(), f"{doc.name}: link to {path}, which does not exist"
        if fragment and linked.suffix == ".md":
            assert fragment in _anchors(linked), f"{doc.name}: link to {path}#{fragment}, no such heading"


def _anchors(doc: Path) -> set[str]:
    return {_anchor(heading) for heading in re.findall(r"^#+ (.+)$", _prose(doc.read_text(encoding="utf-8")), re.M)}


def test_link_extraction_finds_wrapped_links_images_and_anchors() -> None:
    markdown = "[a\nlink](docs/x.md) ![img](y.png) [web](https://a.b) <img src=\"z.gif\" width=\"3\">\n" \
               "```\n[code](not-a-link.md)\n```\n[top](#two-commands)\n"
    assert _links(markdown) == ["docs/x.md", "y.png", "#two-commands", "z.gif"]
    assert _anchor("Stacked MNIST: mode coverage") == "stacked-mnist-mode-coverage"
    assert _anchor("Several processes (DDP)") == "several-processes-ddp"
    assert len(_links(README)) >= 20  # the Contents list alone has more
