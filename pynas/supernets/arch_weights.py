"""Normalisation of architecture parameters, all edges in one batched call.

DARTS normalises each edge's op logits with a softmax; PC-DARTS also
normalises the edge weights of each node over that node's incoming edges.
Both are done for every edge (and both cell types) at once rather than in a
Python loop over edges.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn


class NodeSoftmax(nn.Module):
    """Softmax over the incoming edges of each node, for a flat ``[..., E]`` tensor.

    ``node_edges[i]`` lists the edge indices entering node i (each edge enters
    one node). Edges are padded into a ``[nodes, width]`` table so that one
    softmax covers every node; a gather maps the result back to edge order.
    """

    def __init__(self, node_edges: Sequence[Sequence[int]], num_edges: int):
        super().__init__()
        width = max(len(e) for e in node_edges)
        table = torch.zeros((len(node_edges), width), dtype=torch.long)
        valid = torch.zeros((len(node_edges), width), dtype=torch.bool)
        back = torch.full((num_edges,), -1, dtype=torch.long)
        for i, edges in enumerate(node_edges):
            for slot, e in enumerate(edges):
                table[i, slot] = e
                valid[i, slot] = True
                back[e] = i * width + slot
        if (back < 0).any():
            raise ValueError(f"edges {(back < 0).nonzero().flatten().tolist()} enter no node")
        self.register_buffer("table", table, persistent=False)
        self.register_buffer("valid", valid, persistent=False)
        self.register_buffer("back", back, persistent=False)

    def forward(self, logits: Tensor) -> Tensor:
        padded = logits[..., self.table].masked_fill(~self.valid, float("-inf"))
        return padded.softmax(-1).flatten(-2)[..., self.back]


class ArchitectureMixin:
    """Architecture-parameter access shared by the cell supernets.

    Expects ``alpha`` (op logits, last dim = ops), ``beta`` (edge logits or
    None), ``search_ops`` and, with ``beta``, a ``node_softmax``.
    """

    def arch_parameters(self) -> list[nn.Parameter]:
        params = [self.alpha] if self.search_ops else []
        return params + ([self.beta] if self.beta is not None else [])

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in (self.alpha, self.beta) if p is not None}
        return [p for p in self.parameters() if id(p) not in arch]

    def op_weights(self) -> Tensor:
        """Softmax over the ops of every edge (of every cell type) in one call."""
        return self.alpha.softmax(-1)

    def edge_weights(self) -> Optional[Tensor]:
        """PC-DARTS edge normalisation: softmax over each node's incoming edges."""
        return self.node_softmax(self.beta) if self.beta is not None else None
