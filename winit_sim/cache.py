"""Where Numba caches compiled kernels: a directory keyed by this package's source.

Imported first by the package (before any kernel module), so the setting is in
place before anything compiles.
"""
import hashlib
import os

PACKAGE = os.path.dirname(os.path.abspath(__file__))
VERSION = "0.1.0"


# subpackages no kernel can depend on (tests/test_architecture.py: nothing below imports
# them), left out so that editing them does not recompile every kernel
NO_KERNELS = ("torch",)


def source_digest(root=PACKAGE):
    """Hash of every source file of the package, subpackages included (paths and contents),
    but those of :data:`NO_KERNELS`."""
    digest = hashlib.blake2b(digest_size=8)
    for folder, dirs, files in sorted(os.walk(root)):
        top = os.path.samefile(folder, root)
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__"))
                         and not (top and d in NO_KERNELS))
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, "rb") as fh:
                    digest.update(os.path.relpath(path, root).encode() + fh.read())
    return digest.hexdigest()


SOURCE_DIGEST = source_digest()


def configure_numba_cache():
    """Cache compiled kernels in a directory keyed by :data:`SOURCE_DIGEST`.

    Numba's own cache only notices edits to the file that defines a function, not
    to the functions it inlines from other files; a key over all sources never
    serves a stale kernel. An explicit NUMBA_CACHE_DIR is left alone.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    import numba
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    numba.config.CACHE_DIR = os.path.join(root, "winit_sim", "numba-" + SOURCE_DIGEST)
