"""V of World Models (Ha & Schmidhuber 2018): a VAE from observations to a Gaussian latent z.

The encoder and decoder are the shared ones of :mod:`wm_robotics.models.encoders`: for 64×64
pixels four stride-2 convolutions of depth 32·(1, 2, 4, 8) at ``cnn_depth=32`` — the original's
ConvVAE widths — and a mirrored transposed CNN; proprio goes through an MLP. A linear layer maps
the embedding to the mean and log-variance of q(z | o) (``z_dim`` = 32 by default).
Reconstruction loss: squared error summed over pixels (and symlog proprio dims); KL to N(0, I)
summed over z (the world model weights it and floors it at free nats, the original's ``kl_tolerance``).

Two initialisations keep V from settling in the mean-frame optimum on scenes where the moving
part is small (cartpole's cart and pole are a few hundred of 12,288 pixel values): q(z | o)
starts narrow (std ``init_std``), so z carries the encoder's signal instead of unit noise, and
the image decoder's output layer starts at zero (every pixel at mid-grey), so it reaches the
static background in far fewer updates. Measured on 5,512 random-action cartpole frames
(docs/results/world_models.md): with unit-std init and the default output layer, 2,000 updates
left V at the mean frame; with both changes and the world model's KL warm-up it drew the cart
and pole after about 1,000.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from wm_robotics.models.encoders import ObservationDecoder, ObservationEncoder
from wm_robotics.models.nets import OutputLinear

#: log-variance bounds: keeps exp() finite early in training, far outside any useful std.
_LOGVAR_RANGE = (-12.0, 6.0)


def gaussian_kl(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std²) || N(0, I)) of diagonal Gaussians (..., Z), summed over Z → (...)."""
    return 0.5 * (mean.square() + std.square() - 1.0 - 2.0 * std.log()).sum(-1)


class ConvVAE(nn.Module):
    """Observation dict → q(z | o) = N(mean, std²) → reparameterised z → reconstructed observations."""

    def __init__(self, obs_shapes: dict[str, tuple], z_dim: int = 32, cnn_depth: int = 32, units: int = 256,
                 layers: int = 1, init_std: float = 0.05) -> None:
        super().__init__()
        if z_dim < 1:
            raise ValueError(f"z_dim must be a positive integer, got {z_dim}")
        if not 0 < init_std <= 1:
            raise ValueError(f"init_std must be in (0, 1], got {init_std}")
        self.z_dim = z_dim
        self.encoder = ObservationEncoder(obs_shapes, cnn_depth, units, layers)
        self.keys = self.encoder.keys
        self.to_stats = OutputLinear(self.encoder.out_dim, 2 * z_dim)
        self.decoder = ObservationDecoder(z_dim, obs_shapes, cnn_depth, units, layers)
        with torch.no_grad():
            self.to_stats.bias[z_dim:] = 2.0 * math.log(init_std)  # log-variance of a narrow posterior
            if "pixels" in self.keys:
                self.decoder.cnn[-1].weight.zero_()
                self.decoder.cnn[-1].bias.zero_()

    def posterior(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of q(z | o), each (..., z_dim), for observations with any leading dims."""
        mean, logvar = self.to_stats(self.encoder(obs)).chunk(2, -1)
        return mean, torch.exp(0.5 * logvar.clamp(*_LOGVAR_RANGE))

    @staticmethod
    def sample(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """Reparameterised z = mean + std · ε (gradients flow to mean and std)."""
        return mean + std * torch.randn_like(std)

    def loss(self, obs: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """Per-element terms (...): (reconstruction error per key, KL to N(0, I), the sampled z (..., z_dim))."""
        mean, std = self.posterior(obs)
        z = self.sample(mean, std)
        return self.decoder.loss(z, obs), gaussian_kl(mean, std), z
