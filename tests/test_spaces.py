"""Search spaces, genotypes and the evaluation networks built from them."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from conftest import DATA_DIR
from pynas.models import DartsNetworkCIFAR, DartsNetworkImageNet, NB201Network, drop_path
from pynas.spaces import (
    DARTS_V1,
    DARTS_V2,
    PC_DARTS,
    DartsCellSpace,
    DartsGenotype,
    NB201CellSpace,
    NB201Genotype,
    create_space,
    list_spaces,
    load_genotype,
)
from pynas.spaces.darts_ops import OPS, PRIMITIVES, search_op
from pynas.spaces.nb201_ops import PRIMITIVES as NB201_PRIMITIVES

NB201_DIR = DATA_DIR / "nasbench201"
NB201_CSV = NB201_DIR / "nats_bench.csv"
NB201_PARAMS = NB201_DIR / "eps_all_structure_params.json"

# As printed in PC-DARTS's genotypes.py (DARTS_V2 with list concat, PC_DARTS_cifar with range).
DARTS_V2_TEXT = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
    "reduce_concat=[2, 3, 4, 5])"
)
PC_DARTS_TEXT = (
    "Genotype(normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0), ('dil_conv_3x3', 1), "
    "('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), ('dil_conv_3x3', 1)], "
    "normal_concat=range(2, 6), reduce=[('sep_conv_5x5', 1), ('max_pool_3x3', 0), ('sep_conv_5x5', 1), "
    "('sep_conv_5x5', 2), ('sep_conv_3x3', 0), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)], "
    "reduce_concat=range(2, 6))"
)
# Indices asserted by NAS-Bench-201's own generation script, so the ordering is
# checked even without the CSV.
NB201_KNOWN = {
    0: "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    1: "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
    9: "|avg_pool_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|",
    123: "|avg_pool_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|",
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- registry, ops
def test_registry_lists_and_creates_spaces():
    assert {"darts", "nas-bench-201"} <= set(list_spaces())
    darts = create_space("darts")
    assert isinstance(darts, DartsCellSpace) and darts.num_edges == 14 and len(darts.edges) == 14
    assert darts.edges[:5] == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    assert darts.steps == 4 and darts.multiplier == 4 and darts.primitives == PRIMITIVES
    nb201 = create_space("nas-bench-201")
    assert isinstance(nb201, NB201CellSpace) and nb201.num_edges == 6 and nb201.num_archs == 15625
    with pytest.raises(ValueError, match="unknown search space"):
        create_space("no-such-space")


def test_darts_ops_keep_shape_and_reduce():
    assert PRIMITIVES[0] == "none" and len(PRIMITIVES) == 8
    x = torch.randn(2, 8, 8, 8)
    for name in PRIMITIVES:
        assert OPS[name](8, 1, True)(x).shape == (2, 8, 8, 8), name
        assert OPS[name](8, 2, True)(x).shape == (2, 8, 4, 4), name
        assert search_op(name, 8, 2)(x).shape == (2, 8, 4, 4), name
    # Search-only BN after pools, never affine in the search network.
    pool = search_op("max_pool_3x3", 8, 1)
    assert isinstance(pool[1], torch.nn.BatchNorm2d) and not pool[1].affine
    assert all(not m.affine for m in search_op("sep_conv_3x3", 8, 1).modules() if isinstance(m, torch.nn.BatchNorm2d))


# --------------------------------------------------------------------------- DARTS genotypes
def test_darts_str_is_darts_notation():
    assert str(DARTS_V2) == DARTS_V2_TEXT


@pytest.mark.parametrize("genotype", [DARTS_V1, DARTS_V2, PC_DARTS], ids=["v1", "v2", "pc"])
def test_darts_genotype_round_trips(genotype, tmp_path):
    assert DartsGenotype.parse(str(genotype)) == genotype
    assert DartsGenotype.from_json(genotype.to_json()) == genotype
    assert DartsGenotype.from_json(json.dumps(genotype.to_json())) == genotype
    genotype.save(tmp_path / "g.json")
    assert DartsGenotype.load(tmp_path / "g.json") == genotype
    assert load_genotype(tmp_path / "g.json") == genotype
    assert genotype.to_json()["space"] == "darts"


def test_darts_parse_published_strings():
    assert DartsGenotype.parse(DARTS_V2_TEXT) == DARTS_V2
    assert DartsGenotype.parse(PC_DARTS_TEXT) == PC_DARTS
    # Multi-line layout with tuples, trailing commas and positional concat fields.
    text = """Genotype(
        [('sep_conv_3x3', 0), ("sep_conv_3x3", 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1),
         ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2),],
        range(2, 6),
        reduce=(('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1),
                ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)),
        reduce_concat=[2, 3, 4, 5],
    )"""
    assert DartsGenotype.parse(text) == DARTS_V2


@pytest.mark.parametrize("text, message", [
    ("", "expected a name at character 0, got end of text"),
    ("Genotype(normal=[('sep_conv_3x3', 0)])", "missing field.* normal_concat, reduce, reduce_concat"),
    (DARTS_V2_TEXT[:-1], "expected ',' at character [0-9]+, got end of text"),
    (DARTS_V2_TEXT + " extra", "expected end of text at character 419, got 'extra'"),
    (DARTS_V2_TEXT.replace("normal_concat", "normal_cat"), "unknown field 'normal_cat'"),
    (DARTS_V2_TEXT.replace("[2, 3, 4, 5]", "__import__('os')", 1), "expected a value"),
    (DARTS_V2_TEXT.replace("'sep_conv_3x3', 0", "'sep_conv_3x3'; 0", 1), "unexpected .; 0"),
    ("Foo(normal=[])", "expected 'Genotype"),
    (DARTS_V2_TEXT.replace("reduce=", "normal=", 1), "given twice"),
])
def test_darts_parse_rejects_malformed(text, message):
    with pytest.raises(ValueError, match=message):
        DartsGenotype.parse(text)


def test_darts_genotype_validation():
    normal = list(DARTS_V2.normal)
    with pytest.raises(ValueError, match=r"normal\[1\]: unknown op 'conv_9x9'"):
        DartsGenotype([normal[0], ("conv_9x9", 1)] + normal[2:], [2, 3, 4, 5], DARTS_V2.reduce, [2, 3, 4, 5])
    with pytest.raises(ValueError, match="unknown op 'none'"):
        DartsGenotype([("none", 0)] + normal[1:], [2, 3, 4, 5], DARTS_V2.reduce, [2, 3, 4, 5])
    with pytest.raises(ValueError, match=r"reduce\[2\]: node 1 may read inputs 0..2, got 3"):
        DartsGenotype(normal, [2, 3, 4, 5], [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 3)]
                      + list(DARTS_V2.reduce[3:]), [2, 3, 4, 5])
    with pytest.raises(ValueError, match="two .op, input. pairs per node"):
        DartsGenotype(normal[:7], [2, 3, 4, 5], DARTS_V2.reduce, [2, 3, 4, 5])
    with pytest.raises(ValueError, match="normal_concat: states are 0..5"):
        DartsGenotype(normal, [2, 3, 4, 6], DARTS_V2.reduce, [2, 3, 4, 5])
    with pytest.raises(ValueError, match="space 'nas-bench-201'"):
        DartsGenotype.from_json({**DARTS_V2.to_json(), "space": "nas-bench-201"})
    with pytest.raises(ValueError, match="lacks field"):
        DartsGenotype.from_json({"space": "darts", "normal": normal})
    assert DartsGenotype(normal, range(2, 6), DARTS_V2.reduce, [2, 3, 4, 5]) == DARTS_V2


# --------------------------------------------------------------------------- DARTS derivation
def alpha_for(gene, num_edges=14, primitives=PRIMITIVES, none_logit=0.0):
    """Logits whose DARTS derivation is ``gene``: the first pick of a node is the strongest."""
    space = DartsCellSpace(primitives)
    alpha = torch.zeros(num_edges, len(primitives))
    alpha[:, primitives.index("none")] = none_logit
    for k, (op, j) in enumerate(gene):
        node = k // 2
        row = space.edges.index((node, j))
        alpha[row, primitives.index(op)] = 5.0 if k % 2 == 0 else 4.0
    return alpha


def test_darts_derive_constructed_alpha():
    space = create_space("darts")
    normal = [("sep_conv_3x3", 1), ("skip_connect", 0), ("dil_conv_5x5", 2), ("max_pool_3x3", 0),
              ("sep_conv_5x5", 3), ("avg_pool_3x3", 1), ("dil_conv_3x3", 4), ("sep_conv_3x3", 2)]
    reduce = [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("avg_pool_3x3", 1),
              ("sep_conv_5x5", 3), ("max_pool_3x3", 0), ("dil_conv_5x5", 1), ("skip_connect", 4)]
    genotype = space.derive(alpha_for(normal), alpha_for(reduce))
    assert genotype == DartsGenotype(normal, [2, 3, 4, 5], reduce, [2, 3, 4, 5])
    # The published cells come back from their own alphas, 'none' strongest or not.
    for g in (DARTS_V1, DARTS_V2, PC_DARTS):
        assert space.derive(alpha_for(g.normal, none_logit=8.0), alpha_for(g.reduce, none_logit=8.0)) == g


def test_darts_derive_never_picks_none():
    space = create_space("darts")
    alpha = torch.randn(14, 8)
    alpha[:, 0] = 100.0  # 'none' dominates every edge
    genotype = space.derive(alpha, alpha.flip(0))
    assert all(op != "none" for op, _ in genotype.normal + genotype.reduce)
    # Exact ties everywhere: lowest inputs, first non-none op (DARTS's stable sort and strict '>').
    tied = space.derive(torch.zeros(14, 8), torch.zeros(14, 8))
    assert tied.normal == tuple(("max_pool_3x3", j) for _ in range(4) for j in (0, 1))


def test_darts_derive_ranks_softmax_weights_not_logits():
    space = create_space("darts")
    alpha = torch.zeros(14, 8)
    # Node 0: edge 0 has one strong op; edge 1 has a larger logit split over two ops.
    alpha[0, PRIMITIVES.index("sep_conv_3x3")] = 3.0
    alpha[1, PRIMITIVES.index("sep_conv_3x3")] = 3.2
    alpha[1, PRIMITIVES.index("sep_conv_5x5")] = 3.2
    alpha[2, PRIMITIVES.index("skip_connect")] = 1.0  # node 1, input 0: beats the tied edges
    first = space.derive(alpha, alpha).normal[:2]
    assert first == (("sep_conv_3x3", 0), ("sep_conv_3x3", 1))
    w = alpha.softmax(-1)
    assert w[0, 4] > w[1, 4]  # why edge 0 ranks first although its logit is smaller
    assert space.derive(w, w, logits=False) == space.derive(alpha, alpha)


def test_darts_derive_edge_weights_rerank_edges():
    space = create_space("darts")
    normal = [("sep_conv_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
              ("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1)]
    alpha = alpha_for(normal)
    assert space.derive(alpha, alpha).normal[:2] == (("sep_conv_3x3", 0), ("skip_connect", 1))
    # Node 1 (edges 2..4): give input 2 almost all the edge weight; its op stays the argmax
    # of its own row (here every op ties, so max_pool_3x3), edge 0 keeps sep_conv_3x3.
    beta = torch.zeros(2, 14)
    beta[:, 4] = 6.0
    edge_weights = space.edge_softmax(beta)
    assert torch.allclose(edge_weights[0, 2:5].sum(), torch.tensor(1.0))
    derived = space.derive(alpha, alpha, edge_weights=edge_weights)
    assert derived.normal[2:4] == (("max_pool_3x3", 2), ("sep_conv_3x3", 0))
    # Node 0: equal edge weights change nothing; weighting input 1 up swaps the order.
    beta[:, 1] = 3.0
    derived = space.derive(alpha, alpha, edge_weights=(space.edge_softmax(beta[0]), space.edge_softmax(beta[1])))
    assert derived.normal[:2] == (("skip_connect", 1), ("sep_conv_3x3", 0))


def test_darts_derive_checks_shapes_and_random_genotypes():
    space = create_space("darts")
    with pytest.raises(ValueError, match=r"alpha_normal must have shape \[14, 8\]"):
        space.derive(torch.zeros(14, 7), torch.zeros(14, 8))
    with pytest.raises(ValueError, match="edge_weights"):
        space.derive(torch.zeros(14, 8), torch.zeros(14, 8), edge_weights=torch.ones(2, 13))
    a = space.random_genotype(torch.Generator().manual_seed(3))
    b = space.random_genotype(torch.Generator().manual_seed(3))
    assert a == b and isinstance(a, DartsGenotype)
    # A space without 'none' (e.g. operator search on a fixed topology).
    no_none = DartsCellSpace(PRIMITIVES[1:])
    assert no_none.derive(torch.zeros(14, 7), torch.zeros(14, 7)).normal[0] == ("max_pool_3x3", 0)


# --------------------------------------------------------------------------- NAS-Bench-201
def test_nb201_arch_string_round_trip(tmp_path):
    text = NB201_KNOWN[1]
    g = NB201Genotype.from_arch_str(text)
    assert g.edges == ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3", "skip_connect")
    assert g.to_arch_str() == text and str(g) == text
    assert NB201Genotype.from_json(g.to_json()) == g and g.to_json()["space"] == "nas-bench-201"
    g.save(tmp_path / "g.json")
    assert NB201Genotype.load(tmp_path / "g.json") == g and load_genotype(tmp_path / "g.json") == g
    # Entries of a node may come in any order.
    shuffled = text.replace("skip_connect~0|nor_conv_3x3~1", "nor_conv_3x3~1|skip_connect~0")
    assert NB201Genotype.from_arch_str(shuffled) == g


def test_nb201_index_round_trip_all():
    space = create_space("nas-bench-201")
    for i in range(space.num_archs):
        g = space.genotype_at(i)
        assert space.index_of(g) == i
    for i, text in NB201_KNOWN.items():
        assert space.genotype_at(i).to_arch_str() == text
        assert space.index_of(text) == i
    with pytest.raises(ValueError, match="index"):
        space.genotype_at(15625)


@pytest.mark.skipif(not NB201_CSV.exists(), reason=f"NAS-Bench-201 table not found at {NB201_CSV}")
def test_nb201_index_matches_benchmark_table():
    space = create_space("nas-bench-201")
    with open(NB201_CSV, newline="") as f:
        rows = [row["ArchitectureString"] for row in csv.DictReader(f)]
    assert len(rows) == space.num_archs
    for i, text in enumerate(rows):
        assert space.genotype_at(i).to_arch_str() == text, f"row {i}"
        assert space.index_of(NB201Genotype.from_arch_str(text)) == i


@pytest.mark.parametrize("text, message", [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "3 '\\+'-separated node groups"),
    ("nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 group"),
    ("|nor_conv_3x3~0|+|none~0|+|none~0|none~1|none~2|", "node 2 group .* expected 2 entries"),
    ("|nor_conv_3x3-0|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 entry 'nor_conv_3x3-0'"),
    ("|nor_conv_3x3~1|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 reads nodes 0..0"),
    ("|sep_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'sep_conv_3x3'"),
    ("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", "input 0 appears twice"),
])
def test_nb201_arch_string_errors(text, message):
    with pytest.raises(ValueError, match=message):
        NB201Genotype.from_arch_str(text)


def test_nb201_genotype_validation():
    with pytest.raises(ValueError, match="needs 6 edges"):
        NB201Genotype(("none",) * 5)
    with pytest.raises(ValueError, match="edge 2<-1: unknown op 'conv'"):
        NB201Genotype(("none", "none", "conv", "none", "none", "none"))
    with pytest.raises(ValueError, match="space 'darts'"):
        NB201Genotype.from_json({"space": "darts", "arch": NB201_KNOWN[0]})


def test_nb201_derive_argmax_keeps_none():
    space = create_space("nas-bench-201")
    alpha = torch.zeros(6, 5)
    expected = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3", "nor_conv_3x3"]
    for e, op in enumerate(expected):
        alpha[e, NB201_PRIMITIVES.index(op)] = 1.0 + e
    assert space.derive(alpha).edges == tuple(expected)
    assert space.derive(alpha, exclude_none=True).edges[0] == "skip_connect"  # first of the tied rest
    with pytest.raises(ValueError, match=r"\[6, 5\]"):
        space.derive(torch.zeros(6, 4))
    g = space.random_genotype(torch.Generator().manual_seed(0))
    assert g == space.random_genotype(torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- networks
@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 1, 28, 28)], ids=["cifar", "fashion-mnist"])
def test_darts_network_cifar_forward_backward(shape):
    model = DartsNetworkCIFAR(DARTS_V2, C=8, layers=5, num_classes=10, in_channels=shape[1],
                              auxiliary=True, drop_path_prob=0.2)
    x = torch.randn(shape)
    logits, aux = model(x)
    assert logits.shape == (2, 10) and aux.shape == (2, 10)
    (logits.sum() + 0.4 * aux.sum()).backward()
    assert model.stem[0].weight.grad is not None and model.auxiliary_head.classifier.weight.grad is not None
    model.eval()
    logits, aux = model(x)
    assert logits.shape == (2, 10) and aux is None
    # Drop path is training-only: eval output does not depend on the probability.
    model.drop_path_prob = 0.0
    assert torch.equal(model(x)[0], logits)


def test_darts_network_imagenet_forward():
    model = DartsNetworkImageNet(PC_DARTS, C=8, layers=3, num_classes=7, drop_path_prob=0.1)
    logits, aux = model(torch.randn(2, 3, 224, 224))
    assert logits.shape == (2, 7) and aux.shape == (2, 7)
    logits.sum().backward()


def test_drop_path_zeroes_whole_samples():
    x = torch.ones(1000, 3, 2, 2)
    y = drop_path(x, 0.25)
    per_sample = y.flatten(1)
    kept = per_sample[:, 0] != 0
    assert torch.all(per_sample[kept] == 1 / 0.75) and torch.all(per_sample[~kept] == 0)
    assert 0.6 < kept.float().mean() < 0.9
    assert drop_path(x, 0.0) is x


def test_darts_v2_parameter_count():
    # DARTS Table 1: 3.3M parameters (CIFAR-10, C=36, 20 cells, auxiliary head excluded).
    count = n_params(DartsNetworkCIFAR(DARTS_V2, C=36, layers=20, num_classes=10, auxiliary=False))
    assert 3.2e6 <= count <= 3.4e6, count


def test_nb201_network_forward_backward():
    model = NB201Network(NB201_KNOWN[1], C=8, N=1, num_classes=5, in_channels=1)
    out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 5)
    out.sum().backward()


@pytest.mark.skipif(not NB201_PARAMS.exists(), reason=f"NAS-Bench-201 params table not found at {NB201_PARAMS}")
def test_nb201_parameter_counts_match_benchmark():
    # Cells are [[op], [op, op], [op, op, op]] with op codes in NB201's op order
    # (0 none ... 4 avg_pool_3x3, per shared/data/PROVENANCE.md); values in millions.
    table = {tuple(code for node in cell for code in node): params for cell, params in
             json.loads(NB201_PARAMS.read_text())}
    gen = torch.Generator().manual_seed(0)
    cells = [(3,) * 6] + [tuple(torch.randint(5, (6,), generator=gen).tolist()) for _ in range(5)]
    for codes in cells:
        genotype = NB201Genotype(tuple(NB201_PRIMITIVES[c] for c in codes))
        count = n_params(NB201Network(genotype, C=16, N=5, num_classes=10)) / 1e6
        assert count == pytest.approx(table[codes], rel=0.01), genotype


def test_load_genotype_names_the_file_in_every_failure(tmp_path):
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "binary.json").write_bytes(bytes(range(200, 256)))
    (tmp_path / "untagged.json").write_text('{"normal": []}')
    (tmp_path / "list.json").write_text("[1, 2]")
    for name, message in (("empty.json", "not a readable genotype JSON file"),
                          ("binary.json", "not a readable genotype JSON file"),
                          ("untagged.json", "needs a 'space' tag"), ("list.json", "needs a 'space' tag")):
        with pytest.raises(ValueError, match=rf"^{tmp_path / name}: .*{message}"):
            load_genotype(tmp_path / name)
    with pytest.raises(ValueError, match="is a folder"):
        load_genotype(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such genotype file"):
        load_genotype(tmp_path / "missing.json")
