"""Allegro: a strictly local equivariant potential (Musaelian et al., Nat. Commun. 14, 579 (2023)).

Every quantity lives on an ordered pair (i, j) of atoms closer than r_max, with i the centre. There
is no message passing between centres: the only communication is inside the cutoff sphere of i,
through the environment embedding, so the model is local and parallelises by domains.

The steps below follow the paper (Fig. 1, Methods) and the current reference code
(mir-group/allegro >= 0.4, ``allegro/model/allegro_models.py``, ``allegro/nn/_allegro.py``):

1. Two-body scalar embedding x_ij^0: a Bessel basis of r_ij times the polynomial cutoff, mapped
   linearly and multiplied by the concatenated centre and neighbour species embeddings, then an MLP.
2. Two-body tensor features V_ij^0: the spherical harmonics Y(r_ij) in ``num_tensor_features``
   channels, each channel and irrep weighted by a linear map of x_ij^0.
3. Per layer l:
   a. environment embedding of the centre, w_ij * Y(r_ij) summed over the neighbours j of i and
      divided by sqrt(avg_num_neighbors), with weights w_ij from the latent features;
   b. tensor product, channel by channel, of V_ij with the environment embedding of i;
   c. the scalar (0e) part of the product joins the latent features, and a latent MLP gives the
      new scalars and the environment weights for the next layer. ``latent_update="dense"`` feeds
      the MLP all earlier scalars concatenated (current reference code); ``"resnet"`` feeds it the
      last scalars and mixes old and new with learned cumulative-softmax coefficients (the paper).
4. Readout: an MLP gives one energy per edge; edge energies are summed onto the centres with the
   factor 1 / sqrt(2 avg_num_neighbors).

Per-species scale and shift, the sum over atoms and forces by autograd are in
:class:`molfold.models.potential.Potential`. No layer has a bias, so everything an edge contributes
goes smoothly to zero at r_max.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from e3nn import o3
from torch import nn
from torch_geometric.data import Data

from molfold.data import graph as G
from molfold.nn.mlp import ScalarMLP
from molfold.nn.radial import BesselBasis, PolynomialCutoff
from molfold.nn.strided import ChannelwiseTensorProduct, WeightedChannels

LATENT_UPDATES = ("dense", "resnet")


def tensor_track_irreps(
    env_irreps: o3.Irreps, allowed: o3.Irreps, num_layers: int
) -> list[o3.Irreps]:
    """Irreps of the tensor features entering each layer, and of the last layer's output.

    Starting from the spherical harmonics, each layer may produce any allowed irrep reachable by a
    product with the environment irreps; the last layer only needs scalars. Irreps that cannot
    lead to the scalars of the last layer are then pruned, backwards. Returns ``num_layers + 1``
    irreps, each irrep with multiplicity 1.
    """
    scalar = o3.Irrep("0e")
    track = [o3.Irreps(env_irreps)]
    for layer in range(num_layers):
        wanted = o3.Irreps([(1, scalar)]) if layer == num_layers - 1 else allowed
        reachable = [
            (1, ir)
            for _, ir in wanted
            if any(ir in ir1 * ir2 for _, ir1 in track[-1] for _, ir2 in env_irreps)
        ]
        track.append(o3.Irreps(reachable))
    for layer in range(num_layers - 1, -1, -1):
        useful_out = {ir for _, ir in track[layer + 1]}
        track[layer] = o3.Irreps(
            [
                (1, ir1)
                for _, ir1 in track[layer]
                if any(set(ir1 * ir2) & useful_out for _, ir2 in env_irreps)
            ]
        )
    return track


class TwoBodyEmbedding(nn.Module):
    """Scalar features x_ij^0 of each edge from its length and the species of its two atoms.

    ``forward(lengths [E, 1] Angstrom, centre_types [E], neighbour_types [E]) -> [E, out_dim]``.
    """

    def __init__(
        self,
        num_types: int,
        r_max: float,
        num_bessels: int,
        polynomial_p: int,
        embed_dim: int,
        out_dim: int,
        mlp_hidden: Sequence[int],
        activation: str,
    ) -> None:
        super().__init__()
        if embed_dim % 2:
            raise ValueError(f"radial_chemical_embed_dim must be even, got {embed_dim}")
        self.r_max = r_max
        self.bessel = BesselBasis(num_bessels)
        self.cutoff = PolynomialCutoff(polynomial_p)
        self.radial_linear = ScalarMLP(num_bessels, embed_dim)
        self.centre_embedding = nn.Embedding(num_types, embed_dim // 2)
        self.neighbour_embedding = nn.Embedding(num_types, embed_dim // 2)
        self.mlp = ScalarMLP(embed_dim, out_dim, mlp_hidden, activation)

    def forward(
        self, lengths: torch.Tensor, centre_types: torch.Tensor, neighbour_types: torch.Tensor
    ) -> torch.Tensor:
        x = lengths / self.r_max
        radial = self.radial_linear(self.bessel(x) * self.cutoff(x))
        species = torch.cat(
            [self.centre_embedding(centre_types), self.neighbour_embedding(neighbour_types)], -1
        )
        return self.mlp(species * radial)


class LatentMixing(nn.Module):
    """Residual update x <- sqrt(c_old) x + sqrt(c_new) x_new of the paper's code (allegro 0.3).

    The coefficients are a cumulative softmax of one learned logit per latent (the two-body
    latent and one per layer), so the latent keeps unit variance whatever the weights.
    """

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_layers + 1))

    def forward(self, old: torch.Tensor, new: torch.Tensor, layer: int) -> torch.Tensor:
        weights = (self.logits - self.logits.max()).exp()
        cumulative = weights.cumsum(0)
        c_old = cumulative[layer] / cumulative[layer + 1]
        c_new = weights[layer + 1] / cumulative[layer + 1]
        return c_old.sqrt() * old + c_new.sqrt() * new


class AllegroLayer(nn.Module):
    """One Allegro layer: environment embedding, tensor product, latent MLP.

    ``forward(tensor_features [E, mul, irreps_in.dim], sh [E, sh.dim], env_weights [E, mul * n_sh],
    latents [E, latent_in_dim], centre [E], num_atoms) -> (tensor_features [E, mul,
    irreps_out.dim], latent_out [E, num_scalar + n_env_weights_out])``.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_out: o3.Irreps,
        sh_irreps: o3.Irreps,
        num_tensor_features: int,
        latent_in_dim: int,
        latent_out_dim: int,
        mlp_hidden: Sequence[int],
        activation: str,
        avg_num_neighbors: float,
        path_channel_coupling: bool,
    ) -> None:
        super().__init__()
        if o3.Irrep("0e") != irreps_out[0].ir:
            raise ValueError(f"layer output irreps must start with 0e, got {irreps_out}")
        self.irreps_in, self.irreps_out = irreps_in, irreps_out
        self.env_weighter = WeightedChannels(sh_irreps, num_tensor_features)
        self.env_sum_factor = 1.0 / math.sqrt(avg_num_neighbors)
        self.tensor_product = ChannelwiseTensorProduct(
            irreps_in, sh_irreps, irreps_out, num_tensor_features, path_channel_coupling
        )
        self.latent_mlp = ScalarMLP(latent_in_dim, latent_out_dim, mlp_hidden, activation)

    def environment(
        self, sh: torch.Tensor, env_weights: torch.Tensor, centre: torch.Tensor, num_atoms: int
    ) -> torch.Tensor:
        """Environment embedding of each edge's centre, [E, mul, sh.dim]."""
        weighted = self.env_weighter(sh, env_weights) * self.env_sum_factor
        per_atom = weighted.new_zeros(num_atoms, *weighted.shape[1:]).index_add_(
            0, centre, weighted
        )
        return per_atom.index_select(0, centre)

    def forward(
        self,
        tensor_features: torch.Tensor,
        sh: torch.Tensor,
        env_weights: torch.Tensor,
        latents: torch.Tensor,
        centre: torch.Tensor,
        num_atoms: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        environment = self.environment(sh, env_weights, centre, num_atoms)
        tensor_features = self.tensor_product(tensor_features, environment)
        scalars = tensor_features[:, :, 0]  # the 0e component of every channel
        return tensor_features, self.latent_mlp(torch.cat([latents, scalars], dim=-1))


class Allegro(nn.Module):
    """Allegro per-atom energies (before per-species scale and shift).

    Parameters
    ----------
    num_types : number of species the model knows (type indices 0..num_types-1)
    r_max : cutoff radius, Angstrom
    num_bessels, polynomial_p : radial basis size and cutoff envelope exponent
    l_max : highest spherical-harmonic degree
    parity : keep both parities up to l_max (O(3) features) instead of only those of the SH
    num_layers : Allegro layers
    num_scalar_features : width of the scalar (latent) track
    num_tensor_features : channels of the tensor track
    radial_chemical_embed_dim : width of the two-body radial x species embedding
    two_body_mlp_hidden, allegro_mlp_hidden, readout_mlp_hidden : hidden widths of the MLPs
    activation : nonlinearity of every MLP
    latent_update : ``"dense"`` (current reference) or ``"resnet"`` (paper)
    tp_path_channel_coupling : per-channel tensor-product path weights
    avg_num_neighbors : mean number of neighbours within r_max in the training data

    ``forward(data, atom_types [N]) -> [N]`` per-atom energies (unscaled).
    """

    def __init__(
        self,
        num_types: int,
        r_max: float = 5.0,
        num_bessels: int = 8,
        polynomial_p: int = 6,
        l_max: int = 1,
        parity: bool = True,
        num_layers: int = 2,
        num_scalar_features: int = 64,
        num_tensor_features: int = 32,
        radial_chemical_embed_dim: int = 64,
        two_body_mlp_hidden: Sequence[int] = (64,),
        allegro_mlp_hidden: Sequence[int] = (64,),
        readout_mlp_hidden: Sequence[int] = (64,),
        activation: str = "silu",
        latent_update: str = "dense",
        tp_path_channel_coupling: bool = True,
        avg_num_neighbors: float = 1.0,
    ) -> None:
        super().__init__()
        if latent_update not in LATENT_UPDATES:
            raise ValueError(
                f"latent_update must be one of {LATENT_UPDATES}, got {latent_update!r}"
            )
        if l_max < 0:
            raise ValueError(f"l_max must be >= 0, got {l_max}")
        if num_layers < 1:
            raise ValueError(f"Allegro needs at least one layer, got num_layers={num_layers}")
        if avg_num_neighbors <= 0:
            raise ValueError(f"avg_num_neighbors must be positive, got {avg_num_neighbors}")
        self.r_max = float(r_max)
        self.num_layers = num_layers
        self.num_scalar_features = num_scalar_features
        self.latent_update = latent_update
        self.edge_energy_factor = 1.0 / math.sqrt(2.0 * avg_num_neighbors)

        sh_irreps = o3.Irreps.spherical_harmonics(l_max, p=-1)
        allowed = (
            o3.Irreps([(1, (degree, p)) for degree in range(l_max + 1) for p in (1, -1)])
            if parity
            else sh_irreps
        )
        self.spherical_harmonics = o3.SphericalHarmonics(sh_irreps, True, "component")
        self.track_irreps = tensor_track_irreps(sh_irreps, allowed, num_layers)
        env_weight_numel = num_tensor_features * len(sh_irreps)

        # 1-2. two-body scalar and tensor embeddings
        self.two_body = TwoBodyEmbedding(
            num_types,
            r_max,
            num_bessels,
            polynomial_p,
            radial_chemical_embed_dim,
            num_scalar_features,
            two_body_mlp_hidden,
            activation,
        )
        self.tensor_embedding_weights = ScalarMLP(num_scalar_features, env_weight_numel)
        self.sh_weighter = WeightedChannels(sh_irreps, num_tensor_features)
        self.first_projection = ScalarMLP(
            num_scalar_features, num_scalar_features + env_weight_numel
        )

        # 3. layers
        dense = latent_update == "dense"
        self.layers = nn.ModuleList()
        for layer in range(num_layers):
            last = layer == num_layers - 1
            scalars_in = num_scalar_features * (layer + 1 if dense else 1)
            self.layers.append(
                AllegroLayer(
                    irreps_in=self.track_irreps[layer],
                    irreps_out=self.track_irreps[layer + 1],
                    sh_irreps=sh_irreps,
                    num_tensor_features=num_tensor_features,
                    latent_in_dim=scalars_in + num_tensor_features,
                    latent_out_dim=num_scalar_features + (0 if last else env_weight_numel),
                    mlp_hidden=allegro_mlp_hidden,
                    activation=activation,
                    avg_num_neighbors=avg_num_neighbors,
                    path_channel_coupling=tp_path_channel_coupling,
                )
            )
        self.latent_mixing = None if dense else LatentMixing(num_layers)

        # 4. edge-energy readout
        readout_in = num_scalar_features * (num_layers + 1 if dense else 1)
        self.edge_readout = ScalarMLP(readout_in, 1, readout_mlp_hidden, activation)

    def forward(self, data: Data, atom_types: torch.Tensor) -> torch.Tensor:
        neighbour, centre = data[G.EDGE_INDEX]
        num_atoms = atom_types.shape[0]
        vectors = G.edge_vectors(data)
        lengths = vectors.norm(dim=-1, keepdim=True)
        sh = self.spherical_harmonics(vectors)

        # 1-2. two-body embeddings
        latent = self.two_body(lengths, atom_types[centre], atom_types[neighbour])
        tensor_features = self.sh_weighter(sh, self.tensor_embedding_weights(latent))
        projection = self.first_projection(latent)
        scalars = [projection[:, : self.num_scalar_features]]
        env_weights = projection[:, self.num_scalar_features :]

        # 3. Allegro layers
        for index, layer in enumerate(self.layers):
            latent_in = torch.cat(scalars, -1) if self.latent_mixing is None else scalars[-1]
            tensor_features, latent_out = layer(
                tensor_features, sh, env_weights, latent_in, centre, num_atoms
            )
            new_scalars = latent_out[:, : self.num_scalar_features]
            env_weights = latent_out[:, self.num_scalar_features :]
            if self.latent_mixing is None:
                scalars.append(new_scalars)
            else:
                scalars = [self.latent_mixing(scalars[-1], new_scalars, index)]

        # 4. edge energies summed onto their centres
        edge_energy = self.edge_readout(torch.cat(scalars, -1)).squeeze(-1)
        edge_energy = edge_energy * self.edge_energy_factor
        return edge_energy.new_zeros(num_atoms).index_add_(0, centre, edge_energy)
