"""An E(3)-equivariant decoder that refines a conformation with e3nn irreps message passing.

molfold's alternative to ReBind's coordinate-free decoder (``model.decoder=equivariant``). It
starts from the encoder's intermediate conformation x0 and the encoder's invariant atom
embeddings, passes NequIP-style messages over every atom pair of a molecule (a complete graph:
no cutoff, so no edge appears or vanishes as atoms move and the output is smooth), and adds an
equivariant displacement to x0:

    x = x0 + Linear_{-> 1x1o}(h_L),   h_{l+1} = h_l + Gate(Linear(sum_j TP(h_j, Y(r_ij); R(e_ij))))

where Y are spherical harmonics (l <= l_max) of r_ij = x0_j - x0_i, and the tensor-product
weights R come from an MLP of invariant edge features e_ij: a Gaussian expansion of |r_ij|, the
bond type, ReBind's attractive / repulsive flags and projections of both atoms' embeddings.
Rotating, reflecting or translating x0 therefore rotates, reflects or translates the output.
"""

from __future__ import annotations

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn


class GaussianDistances(nn.Module):
    """Gaussians exp(-((r - mu_k) / w)^2 / 2) on ``num_basis`` centres evenly in [0, r_max]."""

    def __init__(self, num_basis: int, r_max: float) -> None:
        super().__init__()
        self.register_buffer("centres", torch.linspace(0.0, r_max, num_basis))
        self.width = r_max / (num_basis - 1)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """[E] Angstrom -> [E, num_basis]."""
        return torch.exp(-0.5 * ((r[:, None] - self.centres) / self.width) ** 2)


class InteractionBlock(nn.Module):
    """One equivariant message-passing layer with a gated nonlinearity and a residual."""

    def __init__(self, irreps: o3.Irreps, sh_irreps: o3.Irreps, num_edge_scalars: int) -> None:
        super().__init__()
        scalars = o3.Irreps([(m, ir) for m, ir in irreps if ir.l == 0])
        gated = o3.Irreps([(m, ir) for m, ir in irreps if ir.l > 0])
        self.gate = Gate(
            scalars,
            [torch.nn.functional.silu],
            o3.Irreps(f"{gated.num_irreps}x0e"),
            [torch.sigmoid],
            gated,
        )
        out_irreps, instructions = [], []
        for i, (mul, ir_in) in enumerate(irreps):
            for j, (_, ir_sh) in enumerate(sh_irreps):
                for ir_out in ir_in * ir_sh:
                    if ir_out in self.gate.irreps_in:
                        instructions.append((i, j, len(out_irreps), "uvu", True))
                        out_irreps.append((mul, ir_out))
        self.tensor_product = o3.TensorProduct(
            irreps,
            sh_irreps,
            o3.Irreps(out_irreps),
            instructions,
            shared_weights=False,
            internal_weights=False,
        )
        self.radial = FullyConnectedNet(
            [num_edge_scalars, 64, 64, self.tensor_product.weight_numel], torch.nn.functional.silu
        )
        self.linear = o3.Linear(self.tensor_product.irreps_out, self.gate.irreps_in)

    def forward(self, h, sh, edge_scalars, src, dst, norm) -> torch.Tensor:
        messages = self.tensor_product(h[src], sh, self.radial(edge_scalars))
        summed = torch.zeros(h.shape[0], messages.shape[1], dtype=h.dtype, device=h.device)
        summed.index_add_(0, dst, messages)
        return h + self.gate(self.linear(summed * norm[:, None]))


class EquivariantRefiner(nn.Module):
    """Refine x0 [B, N, 3] given invariant embeddings h [B, N, d] (see the module docstring).

    Parameters
    ----------
    d_model : width of the invariant atom embeddings
    hidden_irreps : irreps of the atom features, e.g. ``"64x0e+16x1o+8x2e"``
    num_layers : message-passing layers
    l_max : largest spherical-harmonic degree of the edge directions
    num_basis, r_max : Gaussian distance expansion (Angstrom); distances beyond r_max still
        interact, through the tail of the last Gaussian and the other edge features
    """

    def __init__(
        self,
        d_model: int,
        hidden_irreps: str = "64x0e+16x1o+8x2e",
        num_layers: int = 3,
        l_max: int = 2,
        num_basis: int = 16,
        r_max: float = 8.0,
        atom_projection: int = 16,
    ) -> None:
        super().__init__()
        self.irreps = o3.Irreps(hidden_irreps).simplify()
        if not self.irreps or self.irreps[0].ir != o3.Irrep("0e"):
            raise ValueError(f"hidden_irreps {hidden_irreps!r} must start with scalars (0e)")
        self.sh_irreps = o3.Irreps.spherical_harmonics(l_max)
        self.distances = GaussianDistances(num_basis, r_max)
        self.embed = nn.Linear(d_model, self.irreps[0].mul)
        self.project_source = nn.Linear(d_model, atom_projection)
        self.project_target = nn.Linear(d_model, atom_projection)
        num_edge_scalars = num_basis + 5 + 2 + 2 * atom_projection
        self.layers = nn.ModuleList(
            InteractionBlock(self.irreps, self.sh_irreps, num_edge_scalars)
            for _ in range(num_layers)
        )
        self.displacement = o3.Linear(self.irreps, o3.Irreps("1x1o"))

    def forward(
        self,
        x0: torch.Tensor,
        h: torch.Tensor,
        mask: torch.Tensor,
        bond_type: torch.Tensor,
        attraction: torch.Tensor,
        repulsion: torch.Tensor,
    ) -> torch.Tensor:
        """Refined coordinates [B, N, 3] (Angstrom; padding rows are x0's).

        ``bond_type`` [B, N, N] int (0 none, 1 single, 2 double, 3 triple, 4 aromatic),
        ``attraction`` / ``repulsion`` [B, N, N] ReBind's rewired pairs (+1 / -1 where kept).
        """
        b, n, _ = x0.shape
        eye = torch.eye(n, dtype=torch.bool, device=x0.device)
        pairs = mask[:, :, None] & mask[:, None, :] & ~eye
        graph, dst, src = pairs.nonzero(as_tuple=True)  # edge j -> i: messages from src to dst
        flat_dst, flat_src = graph * n + dst, graph * n + src
        vectors = x0[graph, src] - x0[graph, dst]
        sh = o3.spherical_harmonics(self.sh_irreps, vectors, True, normalization="component")
        h_flat = h.reshape(b * n, -1)
        edge_scalars = torch.cat(
            [
                self.distances(vectors.norm(dim=-1)),
                nn.functional.one_hot(bond_type[graph, dst, src], 5).to(x0),
                attraction[graph, dst, src, None].to(x0),
                repulsion[graph, dst, src, None].to(x0),
                self.project_source(h_flat[flat_src]),
                self.project_target(h_flat[flat_dst]),
            ],
            dim=-1,
        )
        neighbours = pairs.sum(-1).reshape(-1).clamp_min(1).to(x0)
        norm = neighbours.rsqrt()
        features = torch.zeros(b * n, self.irreps.dim, dtype=x0.dtype, device=x0.device)
        features[:, : self.irreps[0].mul] = self.embed(h_flat)
        for layer in self.layers:
            features = layer(features, sh, edge_scalars, flat_src, flat_dst, norm)
        displacement = self.displacement(features).reshape(b, n, 3)
        return x0 + displacement * mask[..., None]
