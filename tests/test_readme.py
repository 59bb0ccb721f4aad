"""The README's examples run as written, and print what their comments say."""

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def expected_prints(block: str) -> dict[int, str]:
    """Line number -> the comment of every ``print(...)  # output`` line of ``block`` ("..." stands for any text)."""
    found = {}
    for number, line in enumerate(block.splitlines(), start=1):
        match = re.match(r"\s*print\(.*\)\s+#\s*(.+?)\s*$", line)
        if match:
            found[number] = match.group(1)
    return found


def test_readme_python_examples_run_and_print_what_they_say(tmp_path, monkeypatch):
    blocks = python_blocks()
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    checked = 0
    for block in blocks:
        printed: dict[int, str] = {}

        def record(*args, sep=" ", **_):
            printed[sys._getframe(1).f_lineno] = sep.join(str(a) for a in args)

        exec(compile(block, str(README), "exec"), {"__name__": "__readme__", "print": record})
        for number, comment in expected_prints(block).items():
            pattern = ".*".join(re.escape(part) for part in comment.split("..."))
            assert re.fullmatch(pattern, printed[number]), (
                f"README line {block.splitlines()[number - 1]!r} printed {printed[number]!r}")
            checked += 1
    assert checked >= 4  # the list, the shapes, the mean, the profile's totals


def test_readme_cli_examples_parse():
    from mobilenets.cli import build_parser

    parser = build_parser()
    commands = re.findall(r"^mobilenets (.+)$", README.read_text(), flags=re.M)
    assert commands
    for line in commands:
        parser.parse_args(line.split("#")[0].split())
