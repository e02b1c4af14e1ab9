"""What the thin CLIs in jobs/ share: an argument parser whose errors are one line."""

from __future__ import annotations

import argparse


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad command line prints one `error: ...` line (and exits 2), like every other
    input error of the jobs, instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

