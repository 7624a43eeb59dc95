"""The README's "Adding a strategy" steps work exactly as written (issue 10).

A newcomer follows the how-to literally, so the test does too, on a copy of the repository:
it writes the file named in step 1 with the README's code block, applies step 2's ``diff``
block to ``main.py`` by plain text replacement (as a person editing the file would), and runs
the commands of steps 3 and 4 as subprocesses with a clean environment. Nothing about the
edit is hard-coded here: if the README drops the import line, the copied ``main.py`` fails
with ``NameError`` and so does this test (the second test proves that on purpose).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
HOWTO_HEADING = "### Adding a strategy"
ROOT_EXCLUDED = {".git", "state", "logs", ".env", ".pytest_cache", ".benchmarks"}
EXCLUDED_EVERYWHERE = {"__pycache__"}
SUBPROCESS_TIMEOUT_SECONDS = 120
# Appended to the README's run command so that the daemon stops by itself after one simulated
# minute (argparse keeps the last value, so they would also override the README's own).
RUN_BRIEFLY = ["--speed", "3600", "--run-for", "60"]


@dataclass(frozen=True)
class Hunk:
    """One ``@@ file: where @@`` section of the README's diff block."""

    path: str
    old: str
    new: str


@dataclass(frozen=True)
class HowTo:
    """The how-to's steps as parsed out of the README."""

    file_path: str
    file_text: str
    hunks: list[Hunk]
    commands: list[str]

    def command(self, subcommand: str) -> list[str]:
        """The README's ``python main.py <subcommand> ...`` line, run with this interpreter."""
        lines = [c for c in self.commands if shlex.split(c)[:3] == ["python", "main.py", subcommand]]
        assert len(lines) == 1, f"the how-to should show one `python main.py {subcommand}` command: {self.commands}"
        return [sys.executable, *shlex.split(lines[0])[1:]]


def howto_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(HOWTO_HEADING)
    following = re.search(r"^#{1,3} ", text[start + len(HOWTO_HEADING):], flags=re.M)
    end = start + len(HOWTO_HEADING) + following.start() if following else len(text)
    return text[start:end]


def fenced(section: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", section, flags=re.S | re.M)


def parse_hunks(diff: str) -> list[Hunk]:
    """Split a ``diff`` block into hunks; `` ``/``-`` lines are the old text, `` ``/``+`` the new."""
    hunks: list[Hunk] = []
    path, old, new = "", [], []
    for line in diff.splitlines():
        header = re.match(r"^@@ (\S+?):.*@@$", line)
        if header:
            if path:
                hunks.append(Hunk(path, "\n".join(old), "\n".join(new)))
            path, old, new = header.group(1), [], []
            continue
        assert path, f"diff line before any @@ header: {line!r}"
        marker, body = line[:1], line[1:]
        assert marker in (" ", "-", "+", ""), f"not a diff line: {line!r}"
        if marker in (" ", "-", ""):
            old.append(body)
        if marker in (" ", "+", ""):
            new.append(body)
    if path:
        hunks.append(Hunk(path, "\n".join(old), "\n".join(new)))
    return hunks


def parse_howto() -> HowTo:
    section = howto_section()
    file_path = re.search(r"`(strategies/\w+\.py)`", section).group(1)
    python_blocks = fenced(section, "python")
    diff_blocks = fenced(section, "diff")
    assert len(python_blocks) == 1 and len(diff_blocks) == 1, "the how-to has one file and one main.py edit"
    commands = [line.strip() for block in fenced(section, "bash") for line in block.splitlines() if line.strip()]
    return HowTo(file_path, python_blocks[0], parse_hunks(diff_blocks[0]), commands)


def copy_repository(destination: Path) -> Path:
    """The working tree without git data, run-time state, logs, caches or a personal ``.env``."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        excluded = EXCLUDED_EVERYWHERE | (ROOT_EXCLUDED if Path(directory) == REPO else set())
        return {name for name in names if name in excluded}

    return Path(shutil.copytree(REPO, destination, ignore=ignore))


def apply_hunk(root: Path, hunk: Hunk) -> None:
    target = root / hunk.path
    text = target.read_text(encoding="utf-8")
    assert text.count(hunk.old) == 1, (
        f"the README's edit of {hunk.path} no longer matches the file exactly once; expected to find:\n{hunk.old}"
    )
    target.write_text(text.replace(hunk.old, hunk.new, 1), encoding="utf-8")


def follow_steps_1_and_2(root: Path, howto: HowTo) -> None:
    new_file = root / howto.file_path
    assert not new_file.exists(), f"{howto.file_path} already exists in the repository"
    new_file.write_text(howto.file_text, encoding="utf-8")
    for hunk in howto.hunks:
        apply_hunk(root, hunk)


def clean_environment(tmp_path: Path) -> dict[str, str]:
    """Only what a shell must have, plus private state and log directories."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path / "home"),
        "STATE_DIR": str(tmp_path / "state"),
        "LOG_DIR": str(tmp_path / "logs"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def run(command: list[str], root: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=root, env=clean_environment(tmp_path), capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT_SECONDS, check=False)


def describe(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"


def test_the_readme_howto_parses_into_a_file_a_main_py_edit_and_commands():
    howto = parse_howto()
    assert howto.file_path == "strategies/my_strategy.py"
    assert "def my_strategy(" in howto.file_text
    assert {hunk.path for hunk in howto.hunks} == {"main.py"}
    added = [line for hunk in howto.hunks for line in hunk.new.splitlines() if line not in hunk.old.splitlines()]
    assert any(re.search(r"^from strategies\S* import .*\bmy_strategy\b", line) for line in added), added
    assert any(re.search(r"\bmy_strategy\]", line) for line in added), added  # appended to STRATEGIES
    assert howto.command("check")[-2:] == ["--strategy", "my_strategy"]
    assert "--strategy" in howto.command("run")


def test_following_the_readme_howto_verbatim_checks_and_runs_my_strategy(tmp_path):
    howto = parse_howto()
    root = copy_repository(tmp_path / "repo")
    follow_steps_1_and_2(root, howto)

    checked = run(howto.command("check"), root, tmp_path)
    assert checked.returncode == 0, describe(checked)
    assert re.search(r"^my_strategy: 2 legs at index", checked.stdout, flags=re.M), describe(checked)

    ran = run(howto.command("run") + RUN_BRIEFLY, root, tmp_path)
    assert ran.returncode == 0, describe(ran)
    assert "my_strategy" in ran.stdout + ran.stderr, describe(ran)


def test_without_the_readme_import_line_the_check_fails_with_name_error(tmp_path):
    """The control: the import line of step 2 is what makes the how-to work."""
    howto = parse_howto()
    without_import = [
        Hunk(h.path, h.old, "\n".join(line for line in h.new.splitlines() if "import my_strategy" not in line))
        for h in howto.hunks
    ]
    assert without_import != howto.hunks
    root = copy_repository(tmp_path / "repo")
    follow_steps_1_and_2(root, HowTo(howto.file_path, howto.file_text, without_import, howto.commands))

    checked = run(howto.command("check"), root, tmp_path)
    assert checked.returncode != 0, describe(checked)
    assert "NameError" in checked.stderr and "my_strategy" in checked.stderr, describe(checked)
