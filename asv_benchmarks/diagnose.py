"""The overhead of ``winit_sim.torch.diagnose`` against a bare forward and backward pass of
the same model (the same loss, gradients of every parameter), in this run, alternated,
medians of --repeat (warm-up untimed).

    python asv_benchmarks/diagnose.py [--repeat 7] [--threads 2]

Models: a deep MLP (48 x Linear(256) + GELU, batch 64), a ResNet-like CNN (24 residual
blocks of two 3x3 convolutions, 16 channels, 16x16 images, batch 16) and a pre-LN
TransformerEncoder (6 layers, d=128, 4 heads, batch 16 x 32 tokens).
"""
import argparse
import statistics
import time

from benchmarks.common import load_torch


def models(torch):
    nn = torch.nn

    class ConvBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.act = nn.ReLU()
            self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)

        def forward(self, x):
            return x + self.conv2(self.act(self.conv1(x)))

    torch.manual_seed(0)
    mlp = nn.Sequential(*[m for _ in range(48) for m in (nn.Linear(256, 256), nn.GELU())])
    cnn = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), *[ConvBlock(16) for _ in range(24)],
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(128, 4, 256, dropout=0.0,
                                                           batch_first=True, norm_first=True),
                                6, enable_nested_tensor=False)
    return {"MLP 48 x 256": (mlp, torch.randn(64, 256)),
            "ResNet-like CNN, 24 blocks": (cnn, torch.randn(16, 3, 16, 16)),
            "TransformerEncoder, 6 layers": (enc, torch.randn(16, 32, 128))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch = load_torch()
    torch.set_num_threads(args.threads)
    import winit_sim.torch as wt

    def bare(model, x):
        y = model(x)
        loss = (y * wt.cotangent(y, 0)).sum()
        torch.autograd.grad(loss, [p for p in model.parameters()])

    print("| model | bare forward+backward | diagnose | overhead |\n|---|---|---|---|")
    for name, (model, x) in models(torch).items():
        cases = {"bare": lambda: bare(model, x), "diagnose": lambda: wt.diagnose(model, x)}
        for fn in cases.values():   # warm-up: dphi's JIT, torch's first-call costs
            fn()
        times = {k: [] for k in cases}
        for _ in range(args.repeat):
            for k, fn in cases.items():
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"| {name} | {1e3 * med['bare']:.1f} ms | {1e3 * med['diagnose']:.1f} ms | "
              f"{med['diagnose'] / med['bare']:.2f}x |")


if __name__ == "__main__":
    main()
