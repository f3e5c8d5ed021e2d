"""TanhGaussianPolicy (wm_robotics/models/policy_prior.py): bounded actions and their log-density."""

import torch
from torch.distributions import Normal, TanhTransform, TransformedDistribution

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
