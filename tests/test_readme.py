"""The README's examples run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = python_blocks()
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})


def test_readme_cli_examples_parse():
    from mobilenets.cli import build_parser

    parser = build_parser()
    commands = re.findall(r"^mobilenets (.+)$", README.read_text(), flags=re.M)
    assert commands
    for line in commands:
        parser.parse_args(line.split("#")[0].split())
