"""ActorCritic details: argument checks, the policy's distribution, censored likelihood, return scale,
start subsets, per-network learning rates and gradient clipping, the slow-critic weight."""

from __future__ import annotations

import math

import pytest
import torch

from wm_robotics.behaviors.actor_critic import ActorCritic, ReturnNormalizer
from wm_robotics.models.base import State, WorldModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class PlaneModel(WorldModel):
    """2-D point: x' = x + 0.1·a, reward −|x'|, no continue head; records the batch size of each step."""

    obs_keys = ()
    action_dim = 2
    feature_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.batch_sizes: list[int] = []

    def img_step(self, state: State, action: torch.Tensor) -> State:
        self.batch_sizes.append(action.shape[0])
        return {"x": state["x"] + 0.1 * action}

    def features(self, state: State) -> torch.Tensor:
        return torch.cat([state["x"], torch.ones_like(state["x"][..., :1])], -1)

    def predict_reward(self, features: torch.Tensor) -> torch.Tensor:
        return -features[..., :2].norm(dim=-1)


def agent(**kwargs) -> ActorCritic:
    return ActorCritic(3, 2, **{"units": 16, "horizon": 3, **kwargs})


def starts(count: int = 8) -> State:
    return {"x": torch.linspace(-1.0, 1.0, 2 * count).reshape(count, 2)}


def log_normal_cdf(x: float) -> float:
    return math.log(0.5 * math.erfc(-x / math.sqrt(2)))


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match=r"0 <= low < high <= 1, got \(0.5, 0.5\)"):
        ReturnNormalizer(percentiles=(0.5, 0.5))
    with pytest.raises(ValueError, match="imag_starts must be a positive integer or None"):
        agent(imag_starts=0)
    with pytest.raises(ValueError, match="horizon must be at least 1, got 0"):
        agent(horizon=0)


def test_distribution_is_tanh_mean_and_scaled_sigmoid_std():
    policy = agent(min_std=0.2, max_std=0.5)
    with torch.no_grad():  # state-independent raw outputs: mu (2, -0.5), raw std (0, 1)
        policy.actor[-1].weight.zero_()
        policy.actor[-1].bias.copy_(torch.tensor([2.0, -0.5, 0.0, 1.0]))
    dist = policy.distribution(torch.randn(4, 3))
    torch.testing.assert_close(dist.loc, torch.tensor([math.tanh(2.0), math.tanh(-0.5)]).expand(4, 2))
    sigmoid = [1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(-3.0))]  # sigmoid(raw + 2)
    torch.testing.assert_close(dist.scale, torch.tensor([0.3 * s + 0.2 for s in sigmoid]).expand(4, 2))


def test_clipped_log_prob_sums_tail_masses_at_both_bounds_and_the_density_inside():
    dist = torch.distributions.Normal(torch.tensor([-0.8, 0.3, 0.0]), torch.tensor([1.0, 0.5, 2.0]))
    inside = -0.5 * (0.1 / 2.0) ** 2 - math.log(2.0 * math.sqrt(2 * math.pi))
    expected = log_normal_cdf(-0.2) + log_normal_cdf(-1.4) + inside
    assert ActorCritic.log_prob(dist, torch.tensor([-1.0, 1.0, 0.1])).item() == pytest.approx(expected, rel=1e-5)


def test_return_scale_is_the_percentile_range_for_negative_returns():
    assert ReturnNormalizer(decay=0.0)(torch.linspace(-100.0, 0.0, 1001)).item() == pytest.approx(90.0)


def test_entropy_sums_over_action_dims_and_first_scale_is_one():
    torch.manual_seed(0)
    policy = agent()
    with torch.no_grad():  # mean 0, std 0.9 · sigmoid(2) + 0.1 in every state
        policy.actor[-1].weight.zero_()
        policy.actor[-1].bias.zero_()
    metrics = policy.update(PlaneModel(), starts())
    std = 0.9 / (1 + math.exp(-2.0)) + 0.1
    assert metrics["actor/entropy"] == pytest.approx(2 * 0.5 * math.log(2 * math.pi * math.e * std**2), rel=1e-5)
    assert metrics["return/norm_scale"] == 1.0  # the range EMA starts at 0


@pytest.mark.parametrize("imag_starts, imagined", [(5, 5), (8, 8), (100, 8), (None, 8)])
def test_imag_starts_picks_that_many_start_states(imag_starts, imagined):
    torch.manual_seed(0)
    model = PlaneModel()
    agent(imag_starts=imag_starts).update(model, starts(8))
    assert model.batch_sizes == [imagined] * 3


def first_step(**kwargs) -> tuple[float, float]:
    """The largest parameter change of the actor and of the critic in one update."""
    torch.manual_seed(0)
    policy = agent(**kwargs)
    before = [[p.detach().clone() for p in net.parameters()] for net in (policy.actor, policy.critic)]
    policy.update(PlaneModel(), starts())
    return tuple(max((p.detach() - old).abs().max().item() for p, old in zip(net.parameters(), olds))
                 for net, olds in zip((policy.actor, policy.critic), before))


def test_actor_and_critic_step_at_their_own_learning_rates():
    actor, critic = first_step(actor_lr=1e-3, critic_lr=1e-5)
    assert 5e-4 < actor < 1.05e-3 and 5e-6 < critic < 1.05e-5  # Adam's first step: lr · |g| / (|g| + eps)


def test_grad_clip_bounds_both_networks_gradients():
    actor, critic = first_step(actor_lr=1e-3, critic_lr=1e-3, grad_clip=1e-12)
    assert actor < 1e-6 and critic < 1e-6  # lr · 1e-12 / eps ~ 1e-10; unclipped, the first Adam step is ~lr


def test_slow_reg_weights_the_slow_critic_target():
    def critic_loss(slow_reg: float) -> float:
        torch.manual_seed(0)
        policy = agent(slow_reg=slow_reg)
        with torch.no_grad():  # state-independent logits k / 100 over the bins k; the slow critic stays zero
            policy.critic[-1].bias.copy_(torch.arange(255) / 100)
        return policy.update(PlaneModel(), starts())["critic/loss"]

    weight = (1 + 0.997 + 0.997**2) / 3  # the mean loss weight over the horizon, no continue head
    log_sum_exp = math.log((math.exp(2.55) - 1) / (math.exp(0.01) - 1))
    slow_term = weight * (log_sum_exp - 1.27)  # the slow target 0 is the centre bin, k = 127
    assert critic_loss(1.0) - critic_loss(0.0) == pytest.approx(slow_term, rel=1e-4)
    assert critic_loss(0.5) - critic_loss(0.0) == pytest.approx(0.5 * slow_term, rel=1e-4)


@pytest.mark.parametrize("kwargs, message", [
    ({"return_norm_decay": 1.5}, r"return_norm_decay must be in \[0, 1\], got 1.5"),
    ({"slow_critic_decay": -0.1}, "0 <= slow_critic_decay <= 1"),
    ({"min_std": 0.5, "max_std": 0.1}, "0 < min_std <= max_std, got .*0.5 and 0.1")])
def test_decays_and_std_bounds_outside_their_range_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ActorCritic(3, 1, **kwargs)
