"""TanhGaussianPolicy (wm_robotics/models/policy_prior.py): bounded actions and their log-density; the prior's
update step (``MPCBehavior.update``, TD-MPC2's policy loss) against the loss written out by hand."""

import pytest
import torch
from torch import nn
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from wm_robotics.behaviors.mpc_behavior import MPCBehavior
from wm_robotics.models.policy_prior import TanhGaussianPolicy


def test_actions_are_bounded_and_log_prob_matches_torch_tanh_normal():
    torch.manual_seed(0)
    policy = TanhGaussianPolicy(feature_dim=6, action_dim=3, units=16, layers=1)
    features = torch.randn(512, 6)
    action, log_prob = policy(features)
    assert action.shape == (512, 3) and log_prob.shape == (512,)
    assert action.abs().max() < 1
    mean, raw = policy.net(features).chunk(2, -1)
    log_std = policy.log_std_min + 0.5 * policy.log_std_range * (torch.tanh(raw) + 1)
    reference = TransformedDistribution(Normal(mean, log_std.exp()), TanhTransform()).log_prob(action).sum(-1)
    torch.testing.assert_close(log_prob, reference, atol=1e-3, rtol=1e-3)


def test_mean_action_is_deterministic():
    policy = TanhGaussianPolicy(feature_dim=4, action_dim=2, units=8, layers=1)
    features = torch.randn(5, 4)
    first, _ = policy(features, sample=False)
    second, _ = policy(features, sample=False)
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(first, torch.tanh(policy.net(features).chunk(2, -1)[0]))


class LinearCritic(nn.Module):
    """A model with a deterministic prior a = tanh(w·z₀), log π(a) = −a² and Q(z, a) = q_range·(z₀ + a)."""

    action_dim = 1

    def __init__(self, q_range: float) -> None:
        super().__init__()
        self.policy, self.q, self.q_range = nn.Linear(1, 1, bias=False), nn.Identity(), q_range

    def features(self, states: dict) -> torch.Tensor:
        return states["latent"]

    def pi(self, features: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        action = torch.tanh(self.policy(features[..., :1]))
        return action, -(action**2).sum(-1)

    def q_value(self, features: torch.Tensor, action: torch.Tensor, reduce: str = "mean") -> torch.Tensor:
        return self.q_range * (features[..., 0] + action.sum(-1))


@pytest.mark.parametrize("q_range", [20.0, 0.05])  # Q's 5th-95th percentile range above 1, and one floored at 1
def test_prior_update_maximises_scaled_q_plus_entropy_weighted_along_the_rollout(q_range):
    torch.manual_seed(0)
    model = LinearCritic(q_range)
    behavior = MPCBehavior(model, entropy=0.3, rho=0.6, scale_tau=0.5)
    latent = torch.randn(64, 4, 1)  # 64 rollouts of 4 steps
    with torch.no_grad():
        action, log_prob = model.pi(latent)
        q = model.q_value(latent, action)
        low, high = torch.quantile(q[:, 0], torch.tensor([0.05, 0.95]))
        scale = 1 + 0.5 * (max(high - low, 1.0) - 1)  # a running range, from 1, of the first step's Q
        weight = 0.6 ** torch.arange(4.0)
        expected = -((q / scale + 0.3 * log_prob.neg()).mean(0) * weight).mean()
    metrics = behavior.update(model, {"latent": latent})
    assert metrics["pi/q_scale"] == pytest.approx(float(scale), rel=1e-5) and (scale > 1) == (q_range > 1)
    assert metrics["pi/loss"] == pytest.approx(float(expected), rel=1e-5)
    assert metrics["pi/entropy"] == pytest.approx(float(-log_prob.mean()), rel=1e-5)


def test_prior_optimiser_state_and_q_scale_survive_a_checkpoint():
    torch.manual_seed(0)
    model = LinearCritic(20.0)
    behavior = MPCBehavior(model)
    for _ in range(3):
        behavior.update(model, {"latent": torch.randn(16, 2, 1)})
    restored = MPCBehavior(LinearCritic(20.0))
    restored.load_full_state_dict(behavior.full_state_dict())
    assert restored.q_scale == behavior.q_scale > 1
    saved, loaded = behavior.pi_opt.state_dict()["state"], restored.pi_opt.state_dict()["state"]
    assert saved.keys() == loaded.keys() == {0}
    for key, value in saved[0].items():
        torch.testing.assert_close(loaded[0][key], value)
