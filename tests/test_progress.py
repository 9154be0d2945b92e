"""Progress a user can see: in a real terminal the long loops draw tqdm bars with rate and ETA, and
the log lines around them are left intact; without a terminal, only the log lines."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pytest

from .helpers import tiny_supernet_argv

_CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _screen(raw: str) -> list[str]:
    """The lines a terminal shows at the end: carriage returns overwrite, escape sequences dropped."""
    lines = []
    for text in _CSI.sub("", raw).replace("\r\n", "\n").split("\n"):
        row: list[str] = []
        col = 0
        for ch in text:
            if ch == "\r":
                col = 0
                continue
            if col < len(row):
                row[col] = ch
            else:
                row.append(ch)
            col += 1
        lines.append("".join(row).rstrip())
    return [line for line in lines if line]


def _run_in_a_terminal(argv: list[str], tty: bool) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not tty:
        done = subprocess.run(
            [sys.executable, "-m", "neas", *argv], capture_output=True, text=True, env=env, timeout=600
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stderr + done.stdout
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size
    proc = subprocess.Popen([sys.executable, "-m", "neas", *argv], stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=600) == 0, out.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")


@pytest.mark.parametrize("tty", [True, False], ids=["terminal", "pipe"])
def test_a_terminal_shows_bars_with_rate_and_eta_and_the_log_lines_stay_intact(tmp_path, tty):
    argv = ["train-supernet", *tiny_supernet_argv(epochs=2, out=tmp_path / "sn", probe_images=32, shrink_samples=2)]
    raw = _run_in_a_terminal(argv, tty)
    drawn = re.search(r"\d+/20 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(s/it|it/s)\]", raw)  # done/total [elapsed<ETA, rate]
    assert bool(drawn) == tty, raw[-1500:]
    screen = _screen(raw)
    epochs = [line for line in screen if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"], screen
    assert all(re.fullmatch(r"epoch \d/2  loss [\d.]+  ens-acc .*", line) for line in epochs), epochs
    assert not [line for line in screen if "█" in line or "it/s]" in line or "s/it]" in line], screen  # no bar left
