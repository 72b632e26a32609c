"""What a new user meets first: ``import winit_sim`` and the first run's JIT compile.

``timeraw_*`` benchmarks run their code in a fresh interpreter and time all of it. The
cold runs point Numba at an empty cache directory, so they time the compile that the
first call after installing pays (issue #16's cold-start target), for the CLI's default
net (matrix engine) and for the README's first conditional-engine example.
"""


_COLD = """
import atexit, os, shutil, tempfile
os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="winit-cold-")
atexit.register(shutil.rmtree, os.environ["NUMBA_CACHE_DIR"], True)
import winit_sim as ws
{call}
"""


class Startup:
    timeout = 600
    number = 1
    repeat = 1

    def timeraw_import(self):
        return "import winit_sim"

    def timeraw_cold_run_matrix(self):
        return _COLD.format(call='ws.simulate(256, 50, activation="relu", init="he_normal")')

    def timeraw_cold_run_conditional(self):
        return _COLD.format(call="ws.simulate(1024, 100, batch=16)")
