"""asv: a 32-net sweep in this process vs on a Dask LocalCluster of 2 single-thread workers.

The cluster starts and every kernel compiles in setup(), outside the timings.
Skipped without dask.distributed (pip install -e ".[dask]").
"""
import winit_sim as ws

# the public API only, so the same benchmark runs on every commit asv measures
GRID = dict(widths=[128, 256], depths=[100, 300],
            activations=["relu", "tanh", "sigmoid", "leaky_relu"],
            inits=["he_normal", "xavier_normal", "xavier_uniform", "small"], trials=2, batch=16)


class ClusterSweep:
    params = [["here", "dask"]]
    param_names = ["where"]
    timeout = 600
    number = 1
    repeat = 3

    def setup(self, where):
        self.scheduler = None
        if where == "dask":
            try:
                import distributed
            except ImportError:
                raise NotImplementedError("dask.distributed is not installed") from None
            self.cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                                    processes=True, dashboard_address=":0")
            self.scheduler = distributed.Client(self.cluster)
        ws.sweep(**GRID, progress=False, scheduler=self.scheduler)   # warm every process

    def teardown(self, where):
        if self.scheduler is not None:
            self.scheduler.close()
            self.cluster.close()

    def time_sweep(self, where):
        ws.sweep(**GRID, progress=False, scheduler=self.scheduler)
