"""The ops trace into torch.compile(fullgraph=True) graphs with no graph break."""
import torch
from torch import nn

from pynas import ops


class TinyMixedCell(nn.Module):
    """A DARTS-like node (weighted sum), a PC-DARTS edge and a grouped batch norm."""

    def __init__(self, c=8, k=3):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1, bias=False) for _ in range(k))
        self.partial = nn.ModuleList(nn.Conv2d(c // 4, c // 4, 1, bias=False) for _ in range(k))
        self.alpha = nn.Parameter(torch.randn(k) * 1e-3)
        self.beta = nn.Parameter(torch.randn(k) * 1e-3)
        self.bn_weight = nn.Parameter(torch.ones(c))
        self.bn_bias = nn.Parameter(torch.zeros(c))

    def forward(self, x, groups):
        node = ops.weighted_sum([conv(x) for conv in self.convs], self.alpha.softmax(0))
        part = node[:, : node.shape[1] // 4]
        edge = ops.partial_channel_mix([op(part) for op in self.partial], self.beta.softmax(0), node, 4)
        return ops.grouped_batch_norm(edge, groups, 2, self.bn_weight, self.bn_bias)


def test_compile_fullgraph_matches_eager():
    model = TinyMixedCell()
    x = torch.randn(4, 8, 6, 6)
    groups = torch.tensor([0, 1, 1, 0])
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    eager_out = model(x, groups)
    compiled_out = compiled(x, groups)
    torch.testing.assert_close(compiled_out, eager_out)
    eager_out.square().sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled(x, groups).square().sum().backward()
    for a, b in zip([p.grad for p in model.parameters()], eager_grads):
        torch.testing.assert_close(a, b)


def test_compile_inductor_forward():
    model = TinyMixedCell()
    x = torch.randn(4, 8, 6, 6)
    groups = torch.tensor([0, 1, 1, 0])
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, groups), model(x, groups))


def test_compile_path_ops():
    torch._dynamo.config.capture_dynamic_output_shape_ops = True
    try:
        lin = nn.ModuleList(nn.Linear(5, 5) for _ in range(3))

        def f(x, choices):
            buckets = ops.path_dispatch(x, choices, 3)
            return ops.path_combine([m(b) for m, b in zip(lin, buckets)], choices, x)

        x = torch.randn(7, 5)
        choices = torch.tensor([0, 2, 1, 1, 0, 2, 2])
        out = torch.compile(f, fullgraph=True, backend="aot_eager")(x, choices)
        torch.testing.assert_close(out, f(x, choices))
    finally:
        torch._dynamo.config.capture_dynamic_output_shape_ops = False


def test_darts_supernet_compiles_fullgraph():
    """The whole search cell (edges stacked per state, BN buffers written back) traces with no graph break."""
    from pynas.supernets.darts_supernet import DartsSupernet

    net = DartsSupernet(C=4, layers=1, generator=torch.Generator().manual_seed(0))
    twin = DartsSupernet(C=4, layers=1, generator=torch.Generator().manual_seed(0))
    twin.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 8, 8)
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    torch.testing.assert_close(out, twin(x))
    out.square().sum().backward()
    twin(x).square().sum().backward()
    torch.testing.assert_close(net.alpha.grad, twin.alpha.grad)
    # Running statistics updated in the compiled graph, as in eager (once there, twice in the twin).
    bn = net.cells[0].edge_ops["0"][3][0][3]
    assert int(bn.num_batches_tracked) == 1
