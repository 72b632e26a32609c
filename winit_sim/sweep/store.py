"""A sweep's results directory: atomic cell files, grid manifest, resume.

Layout::

    DIR/grid.json            the grid this directory belongs to
    DIR/cells/*.parquet      one file per (width, activation, init, arch) net, all depths
    DIR/results.parquet ...  written when the sweep completes

Every file is written to a temporary name in the same directory, flushed to
disk and renamed over the final name, so a reader (or a resumed sweep) sees
either the whole old file or the whole new one, never a partial one.
"""
import hashlib
import json
import os
import re
import shutil

import pandas as pd


class GridMismatch(ValueError):
    """The directory holds results of another grid."""


def atomic_write(path, write):
    """Call ``write(tmp_path)``, fsync, and rename onto ``path``."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path, text):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
    atomic_write(path, write)


class ResultStore:
    """Cell files of one grid in one directory."""

    def __init__(self, path, grid, force=False):
        self.path = os.fspath(path)
        self.grid = grid
        self.cells = os.path.join(self.path, "cells")
        manifest = os.path.join(self.path, "grid.json")
        want = json.dumps(grid.to_dict(), sort_keys=True, indent=1)
        if os.path.exists(manifest):
            with open(manifest, encoding="utf-8") as fh:
                have = fh.read()
            if have != want:
                if not force:
                    raise GridMismatch(
                        f"{self.path} holds results of a different grid (see its grid.json); "
                        f"use another --out directory, or --force to discard them")
                shutil.rmtree(self.cells, ignore_errors=True)
        elif os.path.isdir(self.cells) and os.listdir(self.cells) and not force:
            raise GridMismatch(f"{self.path} has cell files but no grid.json; "
                               f"use another --out directory, or --force to discard them")
        os.makedirs(self.cells, exist_ok=True)
        atomic_write_text(manifest, want)

    def cell_file(self, group):
        width, act, init, arch = group
        name = f"w{width}_{act}_{init}" + ("" if arch == "mlp" else f"_{arch}")
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
        # a plain net's file is named as before archs existed, so old results resume
        key = group[:3] if arch == "mlp" else group
        digest = hashlib.blake2b(repr(key).encode(), digest_size=4).hexdigest()
        return os.path.join(self.cells, f"{slug}_{digest}.parquet")

    def load(self, group, expected_rows):
        """The saved rows of a group, or None when missing, unreadable or incomplete."""
        path = self.cell_file(group)
        if not os.path.exists(path):
            return None
        try:
            df = pd.read_parquet(path)
            ok = (len(df) == expected_rows and (df["width"] == group[0]).all()
                  and (df["activation"].astype(str) == group[1]).all()
                  and (df["init"].astype(str) == group[2]).all())
            if "arch" not in df.columns and group[3] == "mlp":   # saved before archs
                df.insert(df.columns.get_loc("init") + 1, "arch", "mlp")
            ok = ok and (df["arch"].astype(str) == group[3]).all()
        except Exception:  # corrupt file of any kind: recompute it
            ok = False
        if not ok:
            os.remove(path)
            return None
        return df

    def save(self, group, df):
        atomic_write(self.cell_file(group), lambda tmp: df.to_parquet(tmp, index=False))
