"""The proprio block of a ``split_dynamics`` JEPA (``models/jepa.py``) as a world model of its own, for planners
whose objective reads only the proprio decoded from predicted latents."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from typing_extensions import override

from wm_robotics.models.base import State, WorldModel

if TYPE_CHECKING:
    from wm_robotics.models.jepa import JEPAWorldModel


class ProprioBlockModel(WorldModel):
    """The proprio block of a ``split_dynamics`` JEPA, imagined on its own: for planners whose objective
    reads only proprio decoded from predicted latents (goal energies on proprio ``fields``). The block's
    predictions and decodes equal the full model's, without running the pixel block's predictor.
    States are ``{"latent": (..., block)}``; :meth:`restrict` cuts one from a full-model state."""

    def __init__(self, model: JEPAWorldModel) -> None:
        super().__init__()
        self.model, self.block = model, model.proprio_block
        self.obs_keys, self.action_dim = model.obs_keys, model.action_dim
        self.feature_dim = self.block.stop - self.block.start

    def restrict(self, state: State) -> State:
        """A full-model state → this model's state (the proprio block of its latent)."""
        return {"latent": state["latent"][..., self.block]}

    @override
    def img_step(self, state: State, action: torch.Tensor) -> State:
        return {"latent": self.model.proprio_next(state["latent"], action)}

    @override
    def features(self, state: State) -> torch.Tensor:
        return state["latent"]

    @override
    def decode(self, state: State, keys: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        return self.model.decoder.proprio(state["latent"], keys)
