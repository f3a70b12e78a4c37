"""Cell search spaces: DARTS's ("darts") and NAS-Bench-201's ("nas-bench-201").

A space describes the cell (ops, edges) and turns continuous architecture
weights into a genotype; supernets and algorithms build on it.

DARTS (Liu et al., ICLR 2019, Sec. 2.4): per intermediate node keep the two
incoming edges whose strongest non-'none' op weight is largest, then take that
op. PC-DARTS (Xu et al., ICLR 2020, Sec. 3.3) scales each edge's op weights by
its normalised edge weight before ranking.

NAS-Bench-201 (Dong & Yang, ICLR 2020): 6 edges, one op each; its DARTS
baselines take the argmax op per edge over all 5 ops, 'none' included.
"""
from __future__ import annotations

import random
from functools import lru_cache
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from pynas.spaces import register_space
from pynas.spaces.darts_ops import PRIMITIVES as DARTS_PRIMITIVES
from pynas.spaces.genotypes import NB201_EDGES, DartsGenotype, NB201Genotype
from pynas.spaces.nb201_ops import PRIMITIVES as NB201_PRIMITIVES

__all__ = ["DartsCellSpace", "NB201CellSpace"]


def _weights_matrix(name: str, weights: Any, shape: Tuple[int, ...]) -> Tensor:
    t = torch.as_tensor(weights).detach().cpu()
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {t.dtype}")
    # float16/bfloat16 -> float32; float32 stays float32 so rankings match the
    # original code, which ranks float32 softmax outputs.
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _first_argmax(values: Sequence[float], columns: Sequence[int]) -> int:
    """Column of the largest value; the first one on ties (as DARTS's strict '>' loop)."""
    best = columns[0]
    for k in columns[1:]:
        if values[k] > values[best]:
            best = k
    return best


@register_space("darts")
class DartsCellSpace:
    """The DARTS cell: 2 input states, ``steps`` intermediate nodes, every node
    reading all earlier states, output = concat of the last ``multiplier`` nodes.

    ``edges[e] = (node, input)`` with node 0-based among the intermediate nodes
    and input a state index (0, 1 = the two cell inputs, k >= 2 = node k - 2),
    node-major as in DARTS: 2 + 3 + 4 + 5 = 14 edges for 4 steps. Alpha rows
    follow ``edges``, columns follow ``primitives``.
    """

    name = "darts"

    def __init__(self, primitives: Sequence[str] = DARTS_PRIMITIVES, steps: int = 4, multiplier: int = 4):
        unknown = [p for p in primitives if p not in DARTS_PRIMITIVES]
        if unknown or len(set(primitives)) != len(primitives):
            raise ValueError(f"primitives must be distinct DARTS ops {list(DARTS_PRIMITIVES)}, got {list(primitives)}")
        if all(p == "none" for p in primitives):
            raise ValueError("primitives need at least one op other than 'none'")
        if steps < 1 or not 1 <= multiplier <= steps:
            raise ValueError(f"need steps >= 1 and 1 <= multiplier <= steps, "
                             f"got steps={steps}, multiplier={multiplier}")
        self.primitives = tuple(primitives)
        self.steps = steps
        self.multiplier = multiplier
        self.edges: List[Tuple[int, int]] = [(node, j) for node in range(steps) for j in range(node + 2)]
        self.num_edges = len(self.edges)
        # [start, end) rows of each node's incoming edges: [0, 2), [2, 5), [5, 9), [9, 14) for 4 steps.
        starts = [sum(i + 2 for i in range(node)) for node in range(steps + 1)]
        self.edge_groups: List[Tuple[int, int]] = list(zip(starts[:-1], starts[1:]))
        self.concat = tuple(range(2 + steps - multiplier, steps + 2))

    def __repr__(self) -> str:
        return f"DartsCellSpace(primitives={self.primitives}, steps={self.steps}, multiplier={self.multiplier})"

    def edge_softmax(self, beta: Tensor) -> Tensor:
        """PC-DARTS edge normalisation: softmax of ``beta[..., E]`` within each node's incoming edges."""
        if beta.shape[-1] != self.num_edges:
            raise ValueError(f"beta's last dimension must be {self.num_edges}, got {list(beta.shape)}")
        return torch.cat([beta[..., a:b].softmax(-1) for a, b in self.edge_groups], dim=-1)

    def derive(self, alpha_normal: Any, alpha_reduce: Any, *, edge_weights: Any = None,
               logits: bool = True) -> DartsGenotype:
        """DARTS's discretisation of both cell types.

        alpha_normal, alpha_reduce: ``[num_edges, len(primitives)]`` architecture
            logits, softmaxed per edge here as DARTS does (``logits=False`` if
            they are already op weights).
        edge_weights: PC-DARTS's normalised edge weights, a pair (normal, reduce)
            of ``[num_edges]`` (a ``[2, num_edges]`` tensor works), e.g.
            ``edge_softmax(beta)``. Each edge's op weights are multiplied by its
            edge weight before ranking; the op choice on an edge is unchanged.
        """
        shape = (self.num_edges, len(self.primitives))
        cells = []
        for kind, alpha in (("normal", alpha_normal), ("reduce", alpha_reduce)):
            w = _weights_matrix(f"alpha_{kind}", alpha, shape)
            if logits:
                w = w.softmax(-1)
            if edge_weights is not None:
                ew = _weights_matrix(f"edge_weights ({kind})", edge_weights[0 if kind == "normal" else 1],
                                     (self.num_edges,))
                w = w * ew.to(w.dtype).unsqueeze(1)
            cells.append(self._derive_cell(w.tolist()))
        return DartsGenotype(cells[0], self.concat, cells[1], self.concat)

    def _derive_cell(self, rows: List[List[float]]) -> List[Tuple[str, int]]:
        columns = [k for k, p in enumerate(self.primitives) if p != "none"]
        gene = []
        for node, (start, end) in enumerate(self.edge_groups):
            node_rows = rows[start:end]
            # sorted() is stable: ties keep the lower input index, as in DARTS.
            strongest = sorted(range(node + 2), key=lambda j: -max(node_rows[j][k] for k in columns))[:2]
            for j in strongest:
                gene.append((self.primitives[_first_argmax(node_rows[j], columns)], j))
        return gene

    def random_genotype(self, generator: Optional[torch.Generator] = None) -> DartsGenotype:
        """Uniform sample: per node two distinct inputs, each with a non-'none' op."""
        ops = [p for p in self.primitives if p != "none"]

        def cell() -> List[Tuple[str, int]]:
            gene = []
            for node in range(self.steps):
                inputs = sorted(torch.randperm(node + 2, generator=generator)[:2].tolist())
                picks = torch.randint(len(ops), (2,), generator=generator).tolist()
                gene += [(ops[k], j) for k, j in zip(picks, inputs)]
            return gene

        return DartsGenotype(cell(), self.concat, cell(), self.concat)


@lru_cache(maxsize=1)
def _benchmark_order() -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """(code of benchmark index i, benchmark index of code c).

    NAS-Bench-201 enumerated the 5^6 cells with the first edge varying slowest
    (code = base-5 number of op indices, edge 0 most significant), then shuffled
    the list with Python's ``random.seed(88); random.shuffle`` (AutoDL-Projects,
    exps/NAS-Bench-201/main.py ``generate_meta_info``); that order is the index.
    """
    codes = list(range(len(NB201_PRIMITIVES) ** len(NB201_EDGES)))
    random.Random(88).shuffle(codes)
    index_of_code = [0] * len(codes)
    for i, code in enumerate(codes):
        index_of_code[code] = i
    return tuple(codes), tuple(index_of_code)


@register_space("nas-bench-201")
class NB201CellSpace:
    """NAS-Bench-201's cell: nodes 0..3, node j = sum over i < j of op_ij(node i),
    output node 3; ``edges[e] = (to, from)`` in arch-string order."""

    name = "nas-bench-201"
    primitives = NB201_PRIMITIVES
    edges: List[Tuple[int, int]] = list(NB201_EDGES)
    num_edges = len(NB201_EDGES)
    num_nodes = 4
    num_archs = len(NB201_PRIMITIVES) ** len(NB201_EDGES)  # 15,625

    def __repr__(self) -> str:
        return "NB201CellSpace()"

    def derive(self, alpha: Any, *, exclude_none: bool = False) -> NB201Genotype:
        """Argmax op per edge of ``alpha [6, 5]`` (logits or weights: same argmax).

        NAS-Bench-201's DARTS baselines keep 'none' in the argmax (its
        ``genotype()`` of the DARTS search models); ``exclude_none=True`` skips it.
        """
        rows = _weights_matrix("alpha", alpha, (self.num_edges, len(self.primitives))).tolist()
        columns = [k for k, p in enumerate(self.primitives) if not (exclude_none and p == "none")]
        return NB201Genotype(tuple(self.primitives[_first_argmax(row, columns)] for row in rows))

    def random_genotype(self, generator: Optional[torch.Generator] = None) -> NB201Genotype:
        return self.genotype_at(int(torch.randint(self.num_archs, (1,), generator=generator)))

    def genotype_at(self, index: int) -> NB201Genotype:
        """The cell with NAS-Bench-201 index ``index`` (0..15624)."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.num_archs:
            raise ValueError(f"NAS-Bench-201 index must be an int in [0, {self.num_archs}), got {index!r}")
        code = _benchmark_order()[0][index]
        n = len(self.primitives)
        digits = [(code // n ** (self.num_edges - 1 - e)) % n for e in range(self.num_edges)]
        return NB201Genotype(tuple(self.primitives[d] for d in digits))

    def index_of(self, genotype: Union[NB201Genotype, str]) -> int:
        """NAS-Bench-201 index of a genotype or arch string."""
        if isinstance(genotype, str):
            genotype = NB201Genotype.from_arch_str(genotype)
        code = 0
        for op in genotype.edges:
            code = code * len(self.primitives) + self.primitives.index(op)
        return _benchmark_order()[1][code]
