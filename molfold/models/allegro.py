"""Allegro: a strictly local equivariant potential (Musaelian et al., Nat. Commun. 14, 579 (2023)).

Every quantity lives on an ordered pair (i, j) of atoms closer than r_max, with i the centre. There
is no message passing between centres: the only communication is inside the cutoff sphere of i,
through the environment embedding, so the model is local and parallelises by domains.

``latent_update`` picks one of two versions of the reference code (paper Fig. 1 and Methods):

* ``"dense"``: mir-group/allegro >= 0.4 (nequip-allegro 0.8.3), ``allegro/model/allegro_models.py``
  and ``allegro/nn/_allegro.py``: the same parameters (62,464 for its tutorial settings, 4 species).
* ``"resnet"``: allegro v0.3.0 (tag commit 0cb3ec8, the paper-era design before the 0.4 rewrite),
  ``allegro/nn/_allegro.py`` with the module defaults ``tensors_mixing_mode="uuulin"`` and
  ``self_edge_tensor_product=False``.

1. Two-body scalar embedding x_ij^0: a Bessel basis of r_ij times the polynomial cutoff, mapped
   linearly and multiplied by the concatenated centre and neighbour species embeddings, then an MLP.
2. Two-body tensor features V_ij^0: the spherical harmonics Y(r_ij) in ``num_tensor_features``
   channels, each channel and irrep weighted by a linear map of x_ij^0.
3. Per layer l:
   a. environment embedding of the centre i, w_ij Y(r_ij) summed over neighbours. Dense: over all
      j, / sqrt(avg_num_neighbors), w from the previous latent MLP (from a linear map of x^0 at
      l = 0). Resnet: over all k != j, / sqrt(avg_num_neighbors - 1), w a separate linear map of
      the current latent x^l (v0.3.0 ``env_embed_mlps``).
   b. tensor product, channel by channel, of V_ij with the environment of i. Dense: learned path
      weights, paths to one irrep summed. Resnet: no weights, every path kept, then an equivariant
      linear mixing channels and paths (v0.3.0 ``linears``, :mod:`molfold.nn.path_mixing`).
   c. the scalars of the product join the latent and a latent MLP gives new scalars. Dense: the 0e
      output of every channel; the MLP sees all earlier latents concatenated and also gives the
      next environment weights. Resnet: every scalar path of every channel, taken before the
      linear; the MLP sees x^l, and x^(l+1) = sqrt(c_old) x^l + sqrt(c_new) MLP(x^l, scalars) with
      cumulative-softmax coefficients, fixed unless ``latent_resnet_coefficients_learnable``.
4. Readout: an MLP gives one energy per edge; edge energies are summed onto the centres with the
   factor 1 / sqrt(2 avg_num_neighbors).

In ``"resnet"`` x^0 is the two-body MLP's output itself (v0.3.0 ``latents[0]``). Departures there:
v0.3.0's ``env_embed_mlps[0]`` is one linear map giving the V^0 and the layer-0 environment weights,
here two with the same normalisation (same function and parameter count); v0.3.0 also builds a
linear after the last tensor product whose output is never used (num_tensor_features^2 x scalar
paths parameters), molfold does not. Shared with "dense", unlike v0.3.0: fixed Bessel frequencies
(v0.3.0 trains them), edge energies scaled by 1/sqrt(2 avg_num_neighbors) (v0.3.0: 1/sqrt(avg)),
MLP layers after an activation with gain sqrt(2) (v0.3.0: 1.679, the second moment of SiLU), and
equal initial resnet coefficients (v0.3.0 can set them).

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
from molfold.models.allegro_layers import AllegroLayer, LayerShape, ResnetAllegroLayer
from molfold.models.registry import register
from molfold.nn.centre_sums import sum_over_centres
from molfold.nn.latent_mixing import LatentMixing
from molfold.nn.mlp import ScalarMLP, ScaledLinear
from molfold.nn.strided import WeightedChannels, channel_major_to_irrep_major
from molfold.nn.two_body import TwoBodyEmbedding

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


@register("allegro", kind="potential")
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
    latent_update : ``"dense"`` (current reference) or ``"resnet"`` (paper, allegro v0.3.0)
    tp_path_channel_coupling : per-channel tensor-product path weights (``"dense"`` only: the
        ``"resnet"`` product has no weights, its linear mixes channels and paths)
    avg_num_neighbors : mean number of neighbours within r_max in the training data (> 1 for
        ``"resnet"``, which normalises by avg_num_neighbors - 1)
    latent_resnet_coefficients_learnable : train the resnet mixing logits (``"resnet"`` only)

    ``forward(data, atom_types [N]) -> [N]`` per-atom energies (unscaled).
    """

    strictly_local = True
    """E_i depends only on the edges centred at i: LAMMPS domains need a 2 r_max ghost shell
    (:mod:`molfold.lammps.evaluation`)."""

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
        latent_resnet_coefficients_learnable: bool = False,
    ) -> None:
        super().__init__()
        if latent_update not in LATENT_UPDATES:
            raise ValueError(
                f"latent_update must be one of {LATENT_UPDATES}, got {latent_update!r}"
            )
        dense = latent_update == "dense"
        if dense and latent_resnet_coefficients_learnable:
            raise ValueError("latent_resnet_coefficients_learnable needs latent_update='resnet'")
        if not dense and not tp_path_channel_coupling:
            raise ValueError(
                "tp_path_channel_coupling=False needs latent_update='dense': the 'resnet' tensor"
                " product has no path weights"
            )
        if l_max < 0:
            raise ValueError(f"l_max must be >= 0, got {l_max}")
        if num_layers < 1:
            raise ValueError(f"Allegro needs at least one layer, got num_layers={num_layers}")
        if avg_num_neighbors <= 0:
            raise ValueError(f"avg_num_neighbors must be positive, got {avg_num_neighbors}")
        self.r_max = float(r_max)
        self.num_layers = num_layers
        self.num_tensor_features = num_tensor_features
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

        # 3. layers (a first projection of x^0 in "dense"; built first, to keep its parameters)
        if dense:
            self.first_projection = ScalarMLP(
                num_scalar_features, num_scalar_features + env_weight_numel
            )
        shared = dict(mlp_hidden=allegro_mlp_hidden, activation=activation)
        self.layers = nn.ModuleList()
        for layer in range(num_layers):
            shape = LayerShape(
                self.track_irreps[layer],
                self.track_irreps[layer + 1],
                sh_irreps,
                num_tensor_features,
                avg_num_neighbors,
            )
            last = layer == num_layers - 1
            if dense:
                self.layers.append(
                    AllegroLayer(
                        shape,
                        latent_in_dim=num_scalar_features * (layer + 1) + num_tensor_features,
                        latent_out_dim=num_scalar_features + (0 if last else env_weight_numel),
                        path_channel_coupling=tp_path_channel_coupling,
                        **shared,
                    )
                )
            else:
                self.layers.append(
                    ResnetAllegroLayer(
                        shape, latent_dim=num_scalar_features, mix_paths=not last, **shared
                    )
                )
        self.latent_mixing = (
            None if dense else LatentMixing(num_layers, latent_resnet_coefficients_learnable)
        )

        # 4. edge-energy readout
        readout_in = num_scalar_features * (num_layers + 1 if dense else 1)
        self.edge_readout = ScalarMLP(readout_in, 1, readout_mlp_hidden, activation)
        # the channel weights' maps were drawn in the channel-major order of checkpoint formats
        # < 3: reorder them, so that a seed gives the same initial model as it did then
        self.load_state_dict(self._channel_weights_irrep_major(self.state_dict(), ""))

    @property
    def widest_edge_row(self) -> int:
        """Values per edge of the widest per-edge tensor of a call: a tensor-track feature
        [irreps.dim, channels], or the input or output of an MLP layer. Compiled potentials size
        their blocks of edges by it (:func:`molfold.compiled.potential.block_edges`)."""
        tensor_track = max(irreps.dim for irreps in self.track_irreps) * self.num_tensor_features
        linears = [m.weight.shape for m in self.modules() if isinstance(m, ScaledLinear)]
        return max(tensor_track, *(max(shape) for shape in linears))

    def upgrade_state_dict(self, state_dict: dict, prefix: str, format_version: int) -> dict:
        """A state dict of checkpoint format < 4 in the current layout.

        Format 3 made the channel weights irrep-major (:meth:`_channel_weights_irrep_major`);
        format 4 stores the tensor products' path weights path-major, [paths, channels], the
        transpose of the reference's and of earlier formats' [channels, paths].
        """
        upgraded = dict(state_dict)
        if format_version < 3:
            upgraded = self._channel_weights_irrep_major(upgraded, prefix)
        if format_version < 4 and self.latent_mixing is None:  # resnet products have no weights
            for index in range(self.num_layers):
                key = f"{prefix}layers.{index}.tensor_product.weight"
                upgraded[key] = upgraded[key].t().contiguous()
        return upgraded

    def _channel_weights_irrep_major(self, state_dict: dict, prefix: str) -> dict:
        """``state_dict`` with the columns of every linear map that gives channel weights (tensor
        embedding, environment weights) reordered from channel-major to irrep-major
        (:func:`~molfold.nn.strided.channel_major_to_irrep_major`)."""
        mul, num_irreps = self.sh_weighter.multiplicity, self.sh_weighter.num_irreps
        all_columns = slice(None)
        after_scalars = slice(self.num_scalar_features, None)
        if self.latent_mixing is None:  # dense: x^0 projection, and every latent MLP but the last
            last_linear = f"{2 * (len(self.layers[0].latent_mlp) // 2)}.weight"
            columns = {"tensor_embedding_weights.0.weight": all_columns}
            columns["first_projection.0.weight"] = after_scalars
            for index in range(self.num_layers - 1):
                columns[f"layers.{index}.latent_mlp.{last_linear}"] = after_scalars
        else:
            columns = {"tensor_embedding_weights.0.weight": all_columns}
            for index in range(self.num_layers):
                columns[f"layers.{index}.env_embed.0.weight"] = all_columns
        upgraded = dict(state_dict)
        for name, selected in columns.items():
            key = prefix + name
            upgraded[key] = channel_major_to_irrep_major(state_dict[key], selected, mul, num_irreps)
        return upgraded

    def forward(self, data: Data, atom_types: torch.Tensor) -> torch.Tensor:
        neighbour, centre = data[G.EDGE_INDEX]
        num_atoms = atom_types.shape[0]
        vectors = G.edge_vectors(data)
        lengths = vectors.norm(dim=-1, keepdim=True)
        sh = self.spherical_harmonics(vectors)

        # 1-2. two-body embeddings
        latent = self.two_body(lengths, atom_types[centre], atom_types[neighbour])
        tensor_features = self.sh_weighter(sh, self.tensor_embedding_weights(latent))

        # 3. Allegro layers
        if self.latent_mixing is None:
            latent = self._dense_layers(latent, tensor_features, sh, centre, num_atoms)
        else:
            for index, layer in enumerate(self.layers):
                tensor_features, new_latent = layer(tensor_features, sh, latent, centre, num_atoms)
                latent = self.latent_mixing(latent, new_latent, index)

        # 4. edge energies summed onto their centres
        edge_energy = self.edge_readout(latent).squeeze(-1)
        edge_energy = edge_energy * self.edge_energy_factor
        return sum_over_centres(edge_energy, centre, num_atoms)

    def _dense_layers(
        self,
        latent: torch.Tensor,
        tensor_features: torch.Tensor,
        sh: torch.Tensor,
        centre: torch.Tensor,
        num_atoms: int,
    ) -> torch.Tensor:
        """The dense latent track from x^0 [E, num_scalar]: all latents concatenated, [E,
        num_scalar * (num_layers + 1)]; each layer's MLP sees all the latents before it."""
        projection = self.first_projection(latent)
        scalars = [projection[:, : self.num_scalar_features]]
        env_weights = projection[:, self.num_scalar_features :]
        for layer in self.layers:
            tensor_features, latent_out = layer(
                tensor_features, sh, env_weights, torch.cat(scalars, -1), centre, num_atoms
            )
            scalars.append(latent_out[:, : self.num_scalar_features])
            env_weights = latent_out[:, self.num_scalar_features :]
        return torch.cat(scalars, -1)
