"""NAS-Bench-Macro (Su et al., "Prioritized Architecture Sampling with Monto-Carlo
Tree Search" [sic], CVPR 2021; the benchmark is introduced with the paper's
experiments and released at github.com/xiusu/NAS-Bench-Macro): a chain of 8
searchable layers with 3 candidates each, 3^8 = 6,561 networks, every one
trained from scratch on CIFAR-10.

Candidates (a path's digits, as in the benchmark's keys such as "01220120"):

* 0 ``identity``: no-op. At a layer that changes the resolution and width it
  cannot be one, and is a 1x1 conv (carrying the stride) + BN, no activation;
* 1 ``mb3_k3``: MobileNetV2 inverted residual, kernel 3, expansion 3;
* 2 ``mb6_k5``: MobileNetV2 inverted residual, kernel 5, expansion 6.

The network (read from the benchmark's training code, xiusu/NAS-Bench-Macro
``train/model.py``; the README only draws it): stem 3x3 conv
(no bias) to 32 channels, BN, ReLU at 32x32; three stages of 2, 3 and 3
searchable layers whose first layer has stride 2 and doubles the width
(32 -> 64 -> 128 -> 256 channels, 32 -> 16 -> 8 -> 4 pixels); head 1x1 conv
to 1280 channels (no bias), BN, ReLU, global average pool, linear classifier
(with bias). A MobileNetV2 candidate is 1x1 expansion to C*t channels, BN,
ReLU; k x k depthwise (padding k // 2, carrying the stride), BN, ReLU; 1x1
projection, BN; plus the input when the shape is kept (:mod:`pynas.spaces.mbconv`).
Plain ReLU, not ReLU6; no conv has a bias.

Cost, as the benchmark's file reports it (``train/utils.py``): ``params`` is
the raw count of every parameter (BN affine weights and the classifier bias
included; buffers excluded); ``flops`` is the raw count of multiply-accumulates
of the convs and the classifier's weight matrix for one 32x32 image (BN,
bias, activations and pooling are not counted). Both are integers here, and
equal the file's for all 6,561 keys (tests/test_macro_space.py checks).

The benchmark trained one network per equivalence class: a stride-1
identity layer does nothing, so it moved those to the end of their stage
(``train_benchmark.py``) and gave every key its class's accuracy.
:meth:`MacroSpace.canonical` gives that representative.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from torch import Tensor, nn

from pynas.ops.pooling import GlobalAvgPool2d
from pynas.spaces import register_space
from pynas.spaces._checks import check_positive_int
from pynas.spaces.cost import Cost, conv_cost, conv_out_size, linear_cost
from pynas.spaces.mbconv import InvertedResidual, inverted_residual_cost
from pynas.spaces.path_space import ConfiguredPathSpace, PathLike

__all__ = ["MACRO_OPS", "MacroSpace", "MacroNetwork", "Downsample"]

#: candidate names in the benchmark's code order 0, 1, 2
MACRO_OPS = ("identity", "mb3_k3", "mb6_k5")
#: (kernel size, expansion) of the two MobileNetV2 candidates
_MB = {1: (3, 3), 2: (5, 6)}


class Downsample(nn.Sequential):
    """What 'identity' becomes where the shape changes: 1x1 conv (no bias) carrying the stride, then BN."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_channels))


@register_space("nasbench-macro")
class MacroSpace(ConfiguredPathSpace):
    """NAS-Bench-Macro's space; the defaults are the benchmark's network (see the module docstring).

    The keyword arguments change the skeleton (e.g. tiny widths for tests);
    ``input_size`` only sets the resolution that :meth:`flops` assumes.
    """

    name = "nasbench-macro"

    def __init__(self, *, num_classes: int = 10, in_channels: int = 3, init_channels: int = 32,
                 stages: Sequence[int] = (2, 3, 3), head_channels: int = 1280, input_size: int = 32):
        for arg, value in (("num_classes", num_classes), ("in_channels", in_channels),
                           ("init_channels", init_channels), ("head_channels", head_channels),
                           ("input_size", input_size)):
            check_positive_int(value, arg)
        if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence) or not stages:
            raise ValueError(f"stages must be a non-empty sequence of positive ints, got {stages!r}")
        for i, n in enumerate(stages):
            check_positive_int(n, f"stages[{i}]")
        self.num_classes, self.in_channels, self.init_channels = num_classes, in_channels, init_channels
        self.stages, self.head_channels, self.input_size = tuple(stages), head_channels, input_size
        # (in, out, stride) of every searchable layer: each stage opens with stride 2 and twice the width.
        plan: List[Tuple[int, int, int]] = []
        width = init_channels
        for n in self.stages:
            plan.append((width, 2 * width, 2))
            width *= 2
            plan += [(width, width, 1)] * (n - 1)
        self.plan: Tuple[Tuple[int, int, int], ...] = tuple(plan)
        self.out_channels = width
        self.layer_choices = (MACRO_OPS,) * len(plan)
        self._costs, self._fixed = self._count()

    # -- config ---------------------------------------------------------------------
    def config(self) -> Dict[str, Any]:
        return dict(num_classes=self.num_classes, in_channels=self.in_channels, init_channels=self.init_channels,
                    stages=self.stages, head_channels=self.head_channels, input_size=self.input_size)

    # -- cost ----------------------------------------------------------------------
    def _count(self) -> Tuple[List[List[Cost]], Cost]:
        """Cost of every (layer, choice), and of the fixed stem + head together."""
        size = self.input_size
        fixed = conv_cost(self.in_channels, self.init_channels, 3, size)  # 3x3, padding 1: same size
        costs: List[List[Cost]] = []
        for c_in, c_out, stride in self.plan:
            row = []
            out_size = conv_out_size(size, 1, stride, 0)
            if stride == 1 and c_in == c_out:
                row.append(Cost())
            else:
                row.append(conv_cost(c_in, c_out, 1, out_size))
            for choice in (1, 2):
                k, t = _MB[choice]
                # Every candidate of a layer gives the same output size (odd kernels, padding k // 2).
                if conv_out_size(size, k, stride, k // 2) != out_size:
                    raise ValueError(f"input_size {self.input_size} gives candidates of different output sizes")
                row.append(inverted_residual_cost(c_in, c_out, size, kernel_size=k, expansion=t, stride=stride))
            costs.append(row)
            size = out_size
        fixed = fixed + conv_cost(self.out_channels, self.head_channels, 1, size)
        fixed = fixed + linear_cost(self.head_channels, self.num_classes, bias=True)
        return costs, fixed

    def params(self, path: PathLike) -> int:
        """Parameter count of the path's network (the benchmark's ``params``)."""
        return self._fixed.params + sum(self._costs[layer][v].params for layer, v in enumerate(self.check_path(path)))

    def flops(self, path: PathLike) -> int:
        """Multiply-accumulates of one ``input_size`` image (the benchmark's ``flops``)."""
        return self._fixed.macs + sum(self._costs[layer][v].macs for layer, v in enumerate(self.check_path(path)))

    def canonical(self, path: PathLike) -> Tuple[int, ...]:
        """The equivalent path the benchmark trained: stride-1 identities moved to the end of their stage."""
        p = self.check_path(path)
        out: List[int] = []
        start = 0
        for n in self.stages:
            first, rest = p[start], p[start + 1:start + n]
            kept = [v for v in rest if v != 0]
            out += [first] + kept + [0] * (len(rest) - len(kept))
            start += n
        return tuple(out)

    # -- modules -------------------------------------------------------------------
    def make_stem(self) -> nn.Module:
        return nn.Sequential(nn.Conv2d(self.in_channels, self.init_channels, 3, padding=1, bias=False),
                             nn.BatchNorm2d(self.init_channels), nn.ReLU(inplace=False))

    def make_head(self) -> nn.Module:
        return nn.Sequential(nn.Conv2d(self.out_channels, self.head_channels, 1, bias=False),
                             nn.BatchNorm2d(self.head_channels), nn.ReLU(inplace=False),
                             GlobalAvgPool2d(), nn.Flatten(1), nn.Linear(self.head_channels, self.num_classes))

    def make_op(self, layer: int, choice: int) -> nn.Module:
        c_in, c_out, stride = self.plan[layer]
        if choice == 0:
            return nn.Identity() if stride == 1 and c_in == c_out else Downsample(c_in, c_out, stride)
        k, t = _MB[choice]
        return InvertedResidual(c_in, c_out, kernel_size=k, expansion=t, stride=stride, activation=nn.ReLU)

    def build_supernet(self, **kwargs: Any):
        """A :class:`ChainSupernet` with every candidate of every layer (its own weights each).

        Weights are initialised from torch's global RNG, as the other supernets.
        """
        if kwargs:
            raise TypeError(f"build_supernet takes no options (the space holds the skeleton); got {sorted(kwargs)}")
        from pynas.supernets.choice_layer import ChoiceLayer
        from pynas.supernets.single_path import ChainSupernet

        blocks = [ChoiceLayer([self.make_op(layer, c) for c in range(len(MACRO_OPS))], MACRO_OPS)
                  for layer in range(self.num_layers)]
        return ChainSupernet(self.make_stem(), blocks, self.make_head(), space=self)

    def build_network(self, path: PathLike, **kwargs: Any) -> "MacroNetwork":
        if kwargs:
            raise TypeError(f"build_network takes no options (the space holds the skeleton); got {sorted(kwargs)}")
        return MacroNetwork(self, path)

    # -- supernet weights -> stand-alone network -------------------------------------------
    def path_state_dict(self, supernet: nn.Module, path: PathLike) -> Dict[str, Tensor]:
        """State dict of ``build_network(path)`` holding the supernet's weights (and BN buffers) of that path."""
        p = self.check_path(path)
        space = getattr(supernet, "space", None)
        if not isinstance(space, MacroSpace) or space != self:
            raise ValueError(f"supernet was not built from this space ({self!r}); got space {space!r}")
        state = supernet.state_dict()
        out: Dict[str, Tensor] = {}
        for key, value in state.items():
            if key.startswith("blocks."):
                layer, rest = key[len("blocks."):].split(".", 1)
                prefix = f"candidates.{p[int(layer)]}."
                if not rest.startswith(prefix):
                    continue  # another candidate's weights
                key = f"blocks.{layer}.{rest[len(prefix):]}"
            out[key] = value
        return out


class MacroNetwork(nn.Module):
    """The stand-alone NAS-Bench-Macro network of one path: ``head(blocks(stem(x)))``."""

    def __init__(self, space: MacroSpace, path: PathLike):
        super().__init__()
        if not isinstance(space, MacroSpace):
            raise TypeError(f"space must be a MacroSpace, got {type(space).__name__}")
        self.path = space.check_path(path)
        self.stem = space.make_stem()
        self.blocks = nn.Sequential(*(space.make_op(layer, v) for layer, v in enumerate(self.path)))
        self.head = space.make_head()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))

    def extra_repr(self) -> str:
        return f"path={''.join(map(str, self.path))}"
