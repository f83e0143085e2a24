"""The two kinds of Allegro layer (:mod:`molfold.models.allegro`), one per latent update.

* :class:`AllegroLayer` (``latent_update="dense"``, the current reference code, mir-group/allegro
  >= 0.4): environment embedding, channel-wise tensor product with learned path weights, latent
  MLP on every earlier scalar.
* :class:`ResnetAllegroLayer` (``latent_update="resnet"``, the paper's code, allegro v0.3.0):
  environment embedding that leaves the edge itself out, unweighted path-wise tensor product,
  equivariant channel-mixing linear, latent MLP on the last latent and every scalar path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from e3nn import o3
from torch import nn

from molfold.nn.environment import EnvironmentEmbedding
from molfold.nn.mlp import ScalarMLP
from molfold.nn.path_mixing import PathMixingLinear, PathwiseTensorProduct
from molfold.nn.strided import ChannelwiseTensorProduct


@dataclass(frozen=True)
class LayerShape:
    """What every Allegro layer is built on: the tensor-track irreps it maps (``irreps_out``
    starting with the scalars), the edges' spherical-harmonic irreps, the number of tensor
    channels, and the environment sum's normalisation (``avg_num_neighbors``)."""

    irreps_in: o3.Irreps
    irreps_out: o3.Irreps
    sh_irreps: o3.Irreps
    num_tensor_features: int
    avg_num_neighbors: float

    def __post_init__(self) -> None:
        if o3.Irrep("0e") != self.irreps_out[0].ir:
            raise ValueError(f"layer output irreps must start with 0e, got {self.irreps_out}")

    def environment(self, exclude_self: bool) -> EnvironmentEmbedding:
        """The environment embedding of a layer of this shape (see
        :class:`~molfold.nn.environment.EnvironmentEmbedding`)."""
        return EnvironmentEmbedding(
            self.sh_irreps, self.num_tensor_features, self.avg_num_neighbors, exclude_self
        )


class AllegroLayer(nn.Module):
    """One layer of the current reference code: environment, weighted tensor product, latent MLP.

    ``forward(tensor_features [E, irreps_in.dim, mul], sh [E, sh.dim], env_weights [E, mul * n_sh],
    latents [E, latent_in_dim], centre [E], num_atoms) -> (tensor_features [E, irreps_out.dim,
    mul], latent_out [E, num_scalar + n_env_weights_out])``.
    """

    def __init__(
        self,
        shape: LayerShape,
        latent_in_dim: int,
        latent_out_dim: int,
        mlp_hidden: Sequence[int],
        activation: str,
        path_channel_coupling: bool,
    ) -> None:
        super().__init__()
        self.irreps_in, self.irreps_out = shape.irreps_in, shape.irreps_out
        self.environment = shape.environment(exclude_self=False)
        self.tensor_product = ChannelwiseTensorProduct(
            shape.irreps_in,
            shape.sh_irreps,
            shape.irreps_out,
            shape.num_tensor_features,
            path_channel_coupling,
        )
        self.latent_mlp = ScalarMLP(latent_in_dim, latent_out_dim, mlp_hidden, activation)

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
        scalars = tensor_features[:, 0]  # the 0e component of every channel
        return tensor_features, self.latent_mlp(torch.cat([latents, scalars], dim=-1))


class ResnetAllegroLayer(nn.Module):
    """One layer of the paper's code (allegro v0.3.0): environment, path-wise product, linear, MLP.

    The environment weights are a linear map of the latent x^l (``env_embed``), the environment
    leaves the edge itself out, the tensor product has no weights and keeps its paths apart, and
    the latent MLP sees x^l and every scalar path of every channel. ``mix_paths=False`` (last
    layer) drops the linear after the product, whose output nothing would read.

    ``forward(tensor_features [E, irreps_in.dim, mul], sh [E, sh.dim], latent [E, latent_dim],
    centre [E], num_atoms) -> (tensor_features [E, irreps_out.dim, mul], or the unmixed paths
    [E, path_irreps.dim, mul] without ``mix_paths``; latent MLP output [E, latent_dim], before the
    residual update)``.
    """

    def __init__(
        self,
        shape: LayerShape,
        latent_dim: int,
        mlp_hidden: Sequence[int],
        activation: str,
        mix_paths: bool,
    ) -> None:
        super().__init__()
        self.irreps_in, self.irreps_out = shape.irreps_in, shape.irreps_out
        num_tensor_features = shape.num_tensor_features
        self.env_embed = ScalarMLP(latent_dim, num_tensor_features * len(shape.sh_irreps))
        self.environment = shape.environment(exclude_self=True)
        self.tensor_product = PathwiseTensorProduct(
            shape.irreps_in, shape.sh_irreps, shape.irreps_out
        )
        self.num_scalar_paths = self.tensor_product.num_scalar_paths
        self.linear = (
            PathMixingLinear(
                self.tensor_product.path_irreps,
                shape.irreps_out,
                num_tensor_features,
                num_tensor_features,
            )
            if mix_paths
            else None
        )
        latent_in_dim = latent_dim + num_tensor_features * self.num_scalar_paths
        self.latent_mlp = ScalarMLP(latent_in_dim, latent_dim, mlp_hidden, activation)

    def forward(
        self,
        tensor_features: torch.Tensor,
        sh: torch.Tensor,
        latent: torch.Tensor,
        centre: torch.Tensor,
        num_atoms: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        environment = self.environment(sh, self.env_embed(latent), centre, num_atoms)
        paths = self.tensor_product(tensor_features, environment)
        # scalar paths come first, one component each: [E, mul * n_scalar_paths], channel-major
        scalars = paths[:, : self.num_scalar_paths].transpose(1, 2).flatten(1)
        tensor_features = paths if self.linear is None else self.linear(paths)
        return tensor_features, self.latent_mlp(torch.cat([latent, scalars], dim=-1))
