"""Real models from timm, torchvision and HuggingFace transformers, built from tiny configs
with random init (nothing downloaded), for the PyTorch bridge's tests. Each builder skips
the calling test where its library is not installed.

On a CPU-only torch, the torchvision wheel from the package index is a CUDA build whose
compiled operators do not load (``RuntimeError: operator torchvision::nms does not
exist`` on import, and timm imports torchvision). The models need none of those operators
(detection's box ops), so :func:`import_torchvision` declares the two that torchvision's
import registers unconditionally (``nms``, ``qnms``), without kernels, and imports it
again: its pure-Python modules (models, transforms) then work. A user on a CPU-only torch
installs the CPU build instead (README).
"""
import sys

import pytest

torch = pytest.importorskip("torch")

_DECLARED = []   # the torch.library that holds the declared operators (kept alive)
_OPS_IMPORT_REGISTERS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                         "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def _forget(prefixes):
    for name in [m for m in sys.modules if m.split(".")[0] in prefixes]:
        del sys.modules[name]


def import_torchvision(required=True):
    """torchvision, with its compiled operators or, where they do not load, without
    (module docstring). Where it is not installed: skips, or (``required`` False) None.
    Call it before importing transformers too, which imports torchvision where it is
    installed."""
    try:
        import torchvision
    except ImportError:
        if not required:
            return None
        pytest.skip("torchvision is not installed")
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
        _forget(("torchvision", "timm"))
        if not _DECLARED:
            lib = torch.library.Library("torchvision", "DEF")
            for schema in _OPS_IMPORT_REGISTERS:
                lib.define(schema)
            _DECLARED.append(lib)
        import torchvision
    return torchvision


def import_timm():
    """timm (through :func:`import_torchvision`); skips where either is not installed."""
    import_torchvision()
    return pytest.importorskip("timm")


def images(batch=4, size=64):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def timm_models():
    """name -> (model, inputs): tiny timm configs of a ViT (fused attention), resnet10t,
    convnext_atto (layer scale 1e-6), an MLP-Mixer and Eva (q/k/v through F.linear)."""
    timm = import_timm()
    torch.manual_seed(0)
    x, small = (images(),), (images(size=32),)
    vit = dict(img_size=32, patch_size=8, depth=3, embed_dim=32, num_heads=4, num_classes=10)
    return {
        "vit": (timm.create_model("vit_tiny_patch16_224", **vit), small),
        "resnet10t": (timm.create_model("resnet10t", num_classes=10), x),
        "convnext_atto": (timm.create_model("convnext_atto", num_classes=10), x),
        "mixer": (timm.models.mlp_mixer.MlpMixer(num_classes=10, img_size=32, patch_size=8,
                                                 num_blocks=3, embed_dim=32), small),
        "eva": (timm.create_model("eva02_tiny_patch14_224", img_size=28, patch_size=7,
                                  depth=3, embed_dim=32, num_heads=4, num_classes=10),
                (images(size=28),)),
    }


def torchvision_models():
    """name -> (model, inputs): torchvision's resnet18 and a tiny VisionTransformer
    (nn.MultiheadAttention)."""
    tv = import_torchvision()
    torch.manual_seed(0)
    x, small = (images(),), (images(size=32),)
    return {
        "tv_resnet18": (tv.models.resnet18(num_classes=10), x),
        "tv_vit": (tv.models.VisionTransformer(image_size=32, patch_size=8, num_layers=3,
                                               num_heads=4, hidden_dim=32, mlp_dim=64,
                                               num_classes=10), small),
    }
