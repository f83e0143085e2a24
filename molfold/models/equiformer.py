"""Equiformer: an equivariant graph attention transformer (Liao & Smidt, ICLR 2023).

Reference code: atomicarchitects/equiformer @64cb786, ``nets/graph_attention_transformer.py``
(QM9), ``_md17.py`` and ``_oc20.py``. One backbone, :class:`Equiformer`, gives the node features;
two registered models read them out:

* ``equiformer`` as a ``potential`` (:class:`EquiformerEnergy`): per-atom energies (MD17), wrapped
  by the registry in :class:`~molfold.models.potential.Potential` (forces by autograd);
* ``equiformer`` as a ``property`` model (:class:`EquiformerProperty`): graph targets (QM9, OC20
  IS2RE) and optionally per-atom vectors (OC20's IS2RS auxiliary task).

The model, as in the paper and the reference:

1. Edges within r_max (attached by the task): Y(r_ij) up to ``l_max`` and a radial basis
   (``gaussian`` 128 for QM9 and OC20, ``exp_normal`` 32 for MD17, ``bessel`` 8 for the QM9
   energies), :mod:`molfold.nn.radial_bases`.
2. Embedding: one-hot species -> linear (+ the same of the OC20 tags) + the edge-degree embedding
   (:mod:`molfold.nn.equiformer_embedding`).
3. ``num_layers`` pre-norm blocks of equivariant graph attention and feed-forward network
   (:mod:`molfold.nn.equiformer_block`); the last maps to ``readout_irreps`` (512x0e) through a
   linear shortcut.
4. Readout: layer norm, Linear -> SiLU -> Linear to scalars per atom, summed over the atoms of a
   graph and divided by sqrt(avg_num_nodes).

``parity=False`` (the reference's default models) labels the spherical harmonics 0e+1e+2e, so the
features are all even and the model is SE(3)-, not E(3)-equivariant: it can tell mirror images
apart. ``parity=True`` uses the true parities 0e+1o+2e (the reference's ``_e3`` variants), for
node irreps with both parities.

Departures from the reference:

* ``cutoff_envelope`` (molfold's, on by default for the potential, off for the property model):
  every contribution of an edge is weighted by the polynomial envelope u(r_ij / r_max) (exponent
  ``polynomial_p``), which vanishes with two derivatives at r_max: the edge-degree messages are
  multiplied by u, the attention softmax is weighted, alpha_ij = u_ij exp(a_ij) / sum_k u_ik
  exp(a_ik), and each attention message is multiplied by u_ij as well (without that factor a
  centre's only neighbour keeps the weight 1 up to r_max). The reference MD17 model is not smooth
  at r_max (radial MLP biases, softmax normalisation), so energies and forces jump when an atom
  crosses the cutoff; with the envelope they are continuous.
* Dataset averages (``avg_num_nodes``, ``avg_num_neighbors``) are constructor arguments filled
  from the training data; the reference hard-codes QM9's for QM9 and MD17 and OC20's for OC20.
* Species are type indices of the trained species (``num_types``), not the reference's one-hot of
  atomic numbers over 5 (QM9, after a remap table), 64 (MD17) or 84 (OC20) entries; the parameter
  counts equal the reference's for ``num_types`` equal to those sizes.
* Spherical harmonics, Clebsch-Gordan coefficients and gates are e3nn 0.6's (the reference used
  e3nn 0.4.4; 0.5 changed the real basis, so reference weights do not transfer as they are).
* The Gaussian basis uses pi, not the reference's 3.14159 (a constant factor 1 + 8e-7); the
  Bessel frequencies are trained as f / pi (molfold's :class:`~molfold.nn.radial.BesselBasis`),
  the same function.
* Left out, all off in every published configuration: ``proj_drop``, ``out_drop``,
  ``rescale_degree``, node attributes other than 1 (``use_node_attr``), atom-pair edge
  attributes, the attention head of the MD17 ``attn`` variant and OC20's ``use_attention_head``,
  and norms other than the equivariant layer norm. The reference's per-slice rescaling of the
  radial MLP's last layer multiplies by 1 for every depth-wise product (one path per output
  slot), so it is not done. The atom-type mapping and the radius graph are not in the model.
* The OC20 auxiliary head (``atom_vector_head``) is the reference's: a graph attention from the
  final (normalised) node features to one vector per atom, 1x1e (``parity=False``) or 1x1o;
  ``"atom_vectors"`` [N, 3] are displacements in Angstrom (``PropertyModel`` does not rescale
  them; the task trains them against relaxed minus initial positions).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence

import torch
from e3nn import o3
from torch import nn
from torch_geometric.data import Data

from molfold.data import graph as G
from molfold.errors import DataError
from molfold.models.registry import register
from molfold.nn.equiformer_attention import GraphAttention
from molfold.nn.equiformer_block import TransformerBlock
from molfold.nn.equiformer_edges import Edges, scatter_sum
from molfold.nn.equiformer_embedding import EdgeDegreeEmbedding, TypeEmbedding
from molfold.nn.equiformer_linear import EquivariantLinear, normalized_activation, scalar_irreps
from molfold.nn.equiformer_norm import EquivariantLayerNorm
from molfold.nn.radial import PolynomialCutoff
from molfold.nn.radial_bases import radial_basis as make_radial_basis

NUM_TAGS = 3  # OC20 tags (graph field ``tags``): 0 sub-surface, 1 surface, 2 adsorbate


def spherical_harmonics_irreps(l_max: int, parity: bool) -> o3.Irreps:
    """``1x0e+1x1o+1x2e...`` (true parities) or ``1x0e+1x1e+1x2e...`` (all even, SE(3))."""
    if l_max < 0:
        raise ValueError(f"l_max must be >= 0, got {l_max}")
    degrees = range(l_max + 1)
    return o3.Irreps([(1, (degree, (-1) ** degree if parity else 1)) for degree in degrees])


class Equiformer(nn.Module):
    """The Equiformer backbone: node features [N, irreps.dim] after the blocks and final norm.

    Parameters
    ----------
    num_types : number of species (type indices 0..num_types-1)
    r_max : cutoff radius, Angstrom
    irreps_node : node irreps of the blocks, e.g. ``128x0e+64x1e+32x2e``
    l_max : highest spherical-harmonic degree of the edges
    parity : true SH parities, E(3)-equivariant (False: all even, SE(3), the reference default)
    num_layers : transformer blocks
    irreps_head, num_heads : irreps of one attention head, number of heads
    irreps_pre_attention : irreps of the attention messages (None: ``irreps_node``)
    irreps_ffn : hidden irreps of the feed-forward networks
    readout_irreps : output irreps of the last block, read out (``512x0e``)
    radial_basis : ``gaussian``, ``exp_normal`` or ``bessel``; num_basis its size
    radial_hidden : hidden widths of the radial MLPs
    polynomial_p : exponent of the polynomial envelope (Bessel basis and ``cutoff_envelope``)
    nonlinear_messages : gated attention values with a second tensor product (published default)
    attention_dropout : dropout of the attention weights; drop_path : of the residual branches
    tag_embedding : add an embedding of the OC20 tags (graph field ``tags``)
    cutoff_envelope : weight every edge contribution by u(r) -> 0 at r_max (smooth energies)
    avg_num_neighbors : mean number of neighbours within r_max in the training data

    ``forward(data, atom_types [N]) -> (features [N, irreps.dim], edges)``.
    """

    def __init__(
        self,
        num_types: int,
        *,
        r_max: float = 5.0,
        irreps_node: str = "128x0e+64x1e+32x2e",
        l_max: int = 2,
        parity: bool = False,
        num_layers: int = 6,
        irreps_head: str = "32x0e+16x1e+8x2e",
        num_heads: int = 4,
        irreps_pre_attention: str | None = None,
        irreps_ffn: str = "384x0e+192x1e+96x2e",
        readout_irreps: str = "512x0e",
        radial_basis: str = "gaussian",
        num_basis: int = 128,
        radial_hidden: Sequence[int] = (64, 64),
        polynomial_p: int = 5,
        nonlinear_messages: bool = True,
        attention_dropout: float = 0.2,
        drop_path: float = 0.0,
        tag_embedding: bool = False,
        cutoff_envelope: bool = False,
        avg_num_neighbors: float,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"Equiformer needs at least one block, got num_layers={num_layers}")
        if r_max <= 0:
            raise ValueError(f"r_max must be positive, got {r_max}")
        self.r_max = float(r_max)
        self.irreps_node = o3.Irreps(irreps_node)
        self.irreps = o3.Irreps(readout_irreps)
        if not scalar_irreps(self.irreps):
            raise ValueError(f"readout_irreps must contain 0e, got {readout_irreps}")
        self.irreps_sh = spherical_harmonics_irreps(l_max, parity)
        self.parity = parity
        self.irreps_head = o3.Irreps(irreps_head)
        self.num_heads = num_heads
        self.irreps_pre_attention = irreps_pre_attention
        self.nonlinear_messages = nonlinear_messages
        self.attention_dropout = attention_dropout
        self.radial_widths = [num_basis, *radial_hidden]

        self.spherical_harmonics = o3.SphericalHarmonics(
            self.irreps_sh, normalize=True, normalization="component"
        )
        self.radial_basis = make_radial_basis(radial_basis, num_basis, r_max, polynomial_p)
        self.envelope = PolynomialCutoff(polynomial_p) if cutoff_envelope else None
        self.atom_embedding = TypeEmbedding(num_types, self.irreps_node)
        self.tag_embedding = TypeEmbedding(NUM_TAGS, self.irreps_node) if tag_embedding else None
        self.edge_degree_embedding = EdgeDegreeEmbedding(
            self.irreps_node, self.irreps_sh, self.radial_widths, avg_num_neighbors
        )
        self.blocks = nn.ModuleList(
            TransformerBlock(
                self.irreps_node,
                self.irreps_sh,
                self.irreps if layer == num_layers - 1 else self.irreps_node,
                self.irreps_head,
                num_heads,
                irreps_ffn,
                self.radial_widths,
                irreps_pre_attention,
                nonlinear_messages,
                attention_dropout,
                drop_path,
            )
            for layer in range(num_layers)
        )
        self.norm = EquivariantLayerNorm(self.irreps)

    def edges(self, data: Data) -> Edges:
        """Spherical harmonics, radial basis and envelope of the edges of ``data``."""
        src, dst = data[G.EDGE_INDEX]
        vectors = G.edge_vectors(data)
        lengths = vectors.norm(dim=1)
        num_nodes = data[G.POS].shape[0]
        batch = data[G.BATCH] if G.BATCH in data and data[G.BATCH] is not None else None
        if batch is None:
            batch = src.new_zeros(num_nodes)
        envelope = None
        if self.envelope is not None:
            envelope = self.envelope((lengths / self.r_max).unsqueeze(-1)).squeeze(-1)
        return Edges(
            src=src,
            dst=dst,
            sh=self.spherical_harmonics(vectors),
            basis=self.radial_basis(lengths),
            envelope=envelope,
            batch=batch,
        )

    def embed(self, data: Data, atom_types: torch.Tensor, edges: Edges) -> torch.Tensor:
        """Initial node features [N, irreps_node.dim]: species (+ tags) + edge degree."""
        x = self.atom_embedding(atom_types)
        if self.tag_embedding is not None:
            if G.TAGS not in data or data[G.TAGS] is None:
                raise DataError(
                    "model.tag_embedding is on but the graph has no 'tags' field ([N] int64: "
                    "0 sub-surface, 1 surface, 2 adsorbate)"
                )
            tags = data[G.TAGS].long()
            if bool(((tags < 0) | (tags >= NUM_TAGS)).any()):
                raise DataError(f"tags must be 0, 1 or 2, got {sorted(set(tags.tolist()))}")
            x = x + self.tag_embedding(tags)
        return x + self.edge_degree_embedding(edges)

    def forward(self, data: Data, atom_types: torch.Tensor) -> tuple[torch.Tensor, Edges]:
        edges = self.edges(data)
        x = self.embed(data, atom_types, edges)
        for block in self.blocks:
            x = block(x, edges)
        return self.norm(x), edges

    def node_features(self, data: Data, atom_types: torch.Tensor) -> torch.Tensor:
        """The final node features [N, irreps.dim] (after the last norm)."""
        return self(data, atom_types)[0]

    def attention_weights(self, data: Data, atom_types: torch.Tensor) -> list[torch.Tensor]:
        """The attention weights [E, num_heads] of every block, in order (eval diagnostics)."""
        edges = self.edges(data)
        x = self.embed(data, atom_types, edges)
        weights = []
        for block in self.blocks:
            weights.append(block.attention.attention_weights(block.norm_1(x), edges))
            x = block(x, edges)
        return weights


class ScalarReadout(nn.Module):
    """Linear (to the 0e part of ``irreps_in``) -> SiLU -> Linear to ``num_outputs`` scalars per
    node. ``forward([N, irreps_in.dim]) -> [N, num_outputs]``."""

    def __init__(self, irreps_in: o3.Irreps, num_outputs: int) -> None:
        super().__init__()
        scalars = scalar_irreps(irreps_in)
        self.linear_1 = EquivariantLinear(irreps_in, scalars)
        self.activation = normalized_activation("silu")
        self.linear_2 = EquivariantLinear(scalars, f"{num_outputs}x0e")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.activation(self.linear_1(x)))


def _with_backbone_hyperparameters(cls: type[nn.Module]) -> type[nn.Module]:
    """Give ``cls.__init__`` (which passes ``**backbone`` on to :class:`Equiformer`) the full
    signature: its own arguments, then the backbone's keyword arguments it does not name. The
    registry reads a model's hyperparameters from that signature."""
    own = inspect.signature(cls.__init__)
    parameters = [p for p in own.parameters.values() if p.kind is not p.VAR_KEYWORD]
    names = {p.name for p in parameters}
    backbone = inspect.signature(Equiformer.__init__).parameters.values()
    parameters += [p for p in backbone if p.kind is p.KEYWORD_ONLY and p.name not in names]
    cls.__init__.__signature__ = own.replace(parameters=parameters)
    return cls


class _EquiformerModel(nn.Module):
    """What both registered models share: the backbone and the scalar readout."""

    def _build(self, num_types: int, num_outputs: int, avg_num_nodes: float, backbone) -> None:
        if avg_num_nodes <= 0:
            raise ValueError(f"avg_num_nodes must be positive, got {avg_num_nodes}")
        self.backbone = Equiformer(num_types, **backbone)
        self.readout = ScalarReadout(self.backbone.irreps, num_outputs)
        self.avg_num_nodes = float(avg_num_nodes)

    @property
    def r_max(self) -> float:
        return self.backbone.r_max

    @property
    def irreps(self) -> o3.Irreps:
        """Irreps of :meth:`node_features`."""
        return self.backbone.irreps

    def node_features(self, data: Data, atom_types: torch.Tensor) -> torch.Tensor:
        """The backbone's final node features [N, irreps.dim]."""
        return self.backbone.node_features(data, atom_types)

    def _atom_outputs(self, features: torch.Tensor) -> torch.Tensor:
        """Readout per atom [N, num_outputs], divided by sqrt(avg_num_nodes)."""
        return self.readout(features) / math.sqrt(self.avg_num_nodes)


@register("equiformer", kind="potential")
@_with_backbone_hyperparameters
class EquiformerEnergy(_EquiformerModel):
    """Equiformer per-atom energies (before per-species scale and shift).

    Parameters: ``num_types``, ``avg_num_nodes`` (mean number of atoms of the training
    structures; the readout divides by its square root), ``cutoff_envelope`` (default on: smooth
    at r_max) and every keyword argument of :class:`Equiformer`.

    ``forward(data, atom_types [N]) -> [N]`` per-atom energies (unscaled).
    """

    def __init__(
        self,
        num_types: int,
        *,
        avg_num_nodes: float,
        cutoff_envelope: bool = True,
        **backbone,
    ) -> None:
        super().__init__()
        self._build(num_types, 1, avg_num_nodes, dict(backbone, cutoff_envelope=cutoff_envelope))

    def forward(self, data: Data, atom_types: torch.Tensor) -> torch.Tensor:
        features, _ = self.backbone(data, atom_types)
        return self._atom_outputs(features)[:, 0]


@register("equiformer", kind="property")
@_with_backbone_hyperparameters
class EquiformerProperty(_EquiformerModel):
    """Equiformer graph targets, optionally with a vector per atom (OC20's IS2RS auxiliary task).

    Parameters: ``num_types``, ``num_targets``, ``avg_num_nodes`` (as for
    :class:`EquiformerEnergy`), ``atom_vector_head`` (a graph-attention head from the final
    features to one vector per atom, 1x1e or, with ``parity``, 1x1o), ``cutoff_envelope``
    (default off, as the reference) and every keyword argument of :class:`Equiformer`.

    ``forward(data, atom_types [N]) -> {"graph": [B, num_targets]}`` (readout summed per graph,
    / sqrt(avg_num_nodes), standardised units), plus ``"atom_vectors"``: [N, 3] with the head.
    """

    def __init__(
        self,
        num_types: int,
        num_targets: int,
        *,
        avg_num_nodes: float,
        atom_vector_head: bool = False,
        cutoff_envelope: bool = False,
        **backbone,
    ) -> None:
        super().__init__()
        if num_targets < 1:
            raise ValueError(f"num_targets must be positive, got {num_targets}")
        self._build(
            num_types, num_targets, avg_num_nodes, dict(backbone, cutoff_envelope=cutoff_envelope)
        )
        self.num_targets = num_targets
        self.vector_head = None
        if atom_vector_head:
            net = self.backbone
            vector = o3.Irreps("1x1o" if net.parity else "1x1e")
            if vector[0].ir not in {ir for _, ir in net.irreps_head}:
                raise ValueError(
                    f"atom_vector_head gives {vector}, which irreps_head {net.irreps_head} lacks"
                )
            self.vector_head = GraphAttention(
                net.irreps,
                net.irreps_sh,
                vector,
                net.irreps_head,
                net.num_heads,
                net.radial_widths,
                net.irreps_pre_attention,
                net.nonlinear_messages,
                net.attention_dropout,
            )

    def forward(self, data: Data, atom_types: torch.Tensor) -> dict[str, torch.Tensor]:
        features, edges = self.backbone(data, atom_types)
        num_graphs = data.num_graphs if hasattr(data, "num_graphs") else 1
        out = {"graph": scatter_sum(self._atom_outputs(features), edges.batch, num_graphs)}
        if self.vector_head is not None:
            out["atom_vectors"] = self.vector_head(features, edges)
        return out
