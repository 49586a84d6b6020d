"""Every command the README and the docs show runs as written.

Each ```bash and ```python block of README.md and docs/*.md runs, in order, in a fresh folder per
page (with ``examples/`` and ``../shared/data`` beside it, as in a clone), on the CPU. A block that
cannot run here says why on the line before it: ``<!-- skip: REASON -->`` (a template with names
of yours, a GPU, a database server, minutes of training). ``<!-- test: run-after-install -->``
runs the part of a set-up command after its install steps, which the test command has done.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>bash|python)\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
MARKER = re.compile(r"<!-- (skip|test): ?(.*?) -->\s*$")
INSTALL = re.compile(r"^.*pip install [^&]*&& ")


def blocks(page: Path) -> list[tuple[str, str, str | None, str]]:
    """(language, code, marker, marker's text) of every bash/python block of the page, in order."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip().splitlines()
        marker = MARKER.search(before[-1]) if before else None
        indent = len(match["indent"])
        code = "\n".join(line[indent:] for line in match["body"].splitlines())
        found.append((match["lang"], code, marker and marker[1], marker and marker[2]))
    return found


def test_every_block_that_is_not_run_says_why() -> None:
    for page in PAGES:
        for lang, code, kind, why in blocks(page):
            if kind == "skip":
                assert why.strip(), f"{page.name}: a skipped block must say why: {code[:60]!r}"
            elif kind == "test":
                assert why == "run-after-install" and INSTALL.match(code), f"{page.name}: {why!r}"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_the_pages_commands_run_as_written(page: Path, mnist_root: Path, tmp_path: Path) -> None:
    runnable = [(lang, code, kind) for lang, code, kind, _ in blocks(page) if kind != "skip"]
    if not runnable:
        pytest.skip(f"{page.name} shows no command to run")
    work = tmp_path / "clone"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(Path(mnist_root).resolve())
    env = {**os.environ, "LRFIND_DATA_DIR": str(mnist_root), "MPLBACKEND": "Agg", "CUDA_VISIBLE_DEVICES": "",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for lang, code, kind in runnable:
        if kind == "test":                       # run-after-install: the test command installed lrfind
            code = INSTALL.sub("", code)
        command = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{page.name}: this {lang} block failed:\n{code}\n{done.stdout[-1500:]}{done.stderr[-3000:]}"


def test_the_version_lrfind_reports_is_the_packages() -> None:
    import lrfind

    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)[1]   # no tomllib on 3.10
    assert lrfind.__version__ == version
    shown = subprocess.run([sys.executable, "-m", "lrfind", "--version"], capture_output=True, text=True, timeout=60)
    assert shown.stdout.strip().endswith(f"lrfind, version {version}")
    assert f"## [{version}]" in (ROOT / "CHANGELOG.md").read_text()
