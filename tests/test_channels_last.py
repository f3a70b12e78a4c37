"""Channels-last end to end: asked for, a supernet step runs NHWC and every fused op sees (and returns)
channels-last tensors, with no conversion to NCHW on the way; results equal the NCHW run's."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pynas.data import DeviceDataset, DeviceLoader
from pynas.supernets.darts_supernet import DartsSupernet

CL = torch.channels_last


def _nhwc(t) -> bool:
    """Channels innermost in memory (for a [N, C, H, W] tensor, possibly a channel slice of one)."""
    return t.dim() != 4 or t.shape[1] == 1 or t.shape[2] * t.shape[3] == 1 or t.stride(1) == 1


class FusedOpLayouts(TorchDispatchMode):
    """Records, for every pynas op called, whether all 4-D tensor inputs and outputs are channels-last."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.namespace == "pynas":
            flat = []
            for a in list(args) + [out]:
                flat.extend(a if isinstance(a, (list, tuple)) else [a])
            tensors = [t for t in flat if isinstance(t, torch.Tensor) and t.dim() == 4 and t.numel() > 0]
            self.calls.append((func.__name__.split(".")[0], all(_nhwc(t) for t in tensors)))
        return out


@pytest.mark.parametrize("partial_channels", [1, 4], ids=["darts", "pc-darts"])
def test_darts_supernet_step_channels_last(partial_channels):
    torch.manual_seed(0)
    kw = dict(C=8, layers=3, num_classes=10, partial_channels=partial_channels, edge_normalization=partial_channels > 1)
    ref = DartsSupernet(**kw).double()
    net = DartsSupernet(**kw).double()
    net.load_state_dict(ref.state_dict())
    net.to(memory_format=CL)
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    y = torch.randint(0, 10, (4,))
    with FusedOpLayouts() as mode:
        loss = torch.nn.functional.cross_entropy(net(x.contiguous(memory_format=CL)), y)
        loss.backward()
    loss_ref = torch.nn.functional.cross_entropy(ref(x), y)
    loss_ref.backward()
    names = {name for name, _ in mode.calls}
    assert {"weighted_sum", "_weighted_sum_backward"} <= names or {"partial_channel_mix"} <= names
    bad = sorted({name for name, ok in mode.calls if not ok})
    assert not bad, f"fused ops that saw or returned NCHW tensors in a channels-last step: {bad}"
    torch.testing.assert_close(loss, loss_ref)
    for (name, a), b in zip(net.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_loader_yields_channels_last_batches():
    images = torch.randint(0, 255, (10, 3, 8, 8), dtype=torch.uint8)
    data = DeviceDataset(images, torch.arange(10) % 2, classes=("a", "b"), mean=(0.5,) * 3, std=(0.25,) * 3)
    plain = next(iter(DeviceLoader(data, batch_size=4, shuffle=False)))[0]
    nhwc = next(iter(DeviceLoader(data, batch_size=4, shuffle=False, memory_format="channels_last")))[0]
    assert plain.is_contiguous() and nhwc.is_contiguous(memory_format=CL)
    assert torch.equal(plain, nhwc)
    with pytest.raises(ValueError, match="memory_format must be one of"):
        DeviceLoader(data, batch_size=4, memory_format="nhwc")


def test_macro_supernet_batched_paths_channels_last():
    """Single-path supernet, per-row paths (path_dispatch / path_combine) and per-path batch norm
    (grouped_batch_norm): channels-last through every fused op, same logits and gradients as NCHW."""
    from pynas.spaces import MacroSpace

    space = MacroSpace(init_channels=4, head_channels=16, input_size=16)
    torch.manual_seed(0)
    ref = space.build_supernet().double().train()
    net = space.build_supernet().double().train()
    net.load_state_dict(ref.state_dict())
    net.to(memory_format=CL)
    paths = torch.as_tensor(space.sample(3, generator=torch.Generator().manual_seed(1)))
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    with FusedOpLayouts() as mode:
        out = net.forward_paths(x.contiguous(memory_format=CL), paths)
        out.square().sum().backward()
    want = ref.forward_paths(x, paths)
    want.square().sum().backward()
    names = {name for name, _ in mode.calls}
    assert "grouped_batch_norm" in names
    bad = sorted({name for name, ok in mode.calls if not ok})
    assert not bad, f"fused ops that saw or returned NCHW tensors in a channels-last pass: {bad}"
    torch.testing.assert_close(out, want)
    for (name, a), b in zip(net.named_parameters(), ref.parameters()):
        if b.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, msg=name)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL])
def test_global_avg_pool_matches_adaptive_pool_and_keeps_the_gradient_layout(fmt):
    from pynas.ops.pooling import GlobalAvgPool2d

    x = torch.randn(3, 5, 4, 6, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    out = GlobalAvgPool2d()(x)
    want = torch.nn.AdaptiveAvgPool2d(1)(x)
    torch.testing.assert_close(out, want)
    g = torch.randn_like(want)
    (gx,) = torch.autograd.grad(out, x, g)
    (gw,) = torch.autograd.grad(want, x, g)
    torch.testing.assert_close(gx, gw)
    assert gx.is_contiguous(memory_format=fmt)
    assert torch.autograd.gradcheck(GlobalAvgPool2d(), (x,))
    with pytest.raises(ValueError, match=r"expects \[N, C, H, W\]"):
        GlobalAvgPool2d()(torch.randn(3, 5, 4))
