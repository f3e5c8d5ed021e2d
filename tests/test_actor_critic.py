"""ActorCritic: λ-returns, action bounds, return normalisation, learning on a toy model, checkpoints."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch

from wm_robotics.behaviors.actor_critic import ActorCritic, ReturnNormalizer, lambda_returns
from wm_robotics.models.base import State, WorldModel
from wm_robotics.precision import compute_precision

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class PointModel(WorldModel):
    """1-D point: x' = clip(x + 0.1·a, -2, 2), reward −|x' − 0.5|, no continue head.

    Features are [x, 1]: mlp's bias-free first layer + LayerNorm would reduce [x] to sign(x).
    """

    obs_keys = ()
    action_dim = 1
    feature_dim = 2

    def img_step(self, state: State, action: torch.Tensor) -> State:
        return {"x": (state["x"] + 0.1 * action).clamp(-2.0, 2.0)}

    def features(self, state: State) -> torch.Tensor:
        return torch.cat([state["x"], torch.ones_like(state["x"])], -1)

    def predict_reward(self, features: torch.Tensor) -> torch.Tensor:
        return -(features[..., 0] - 0.5).abs()


def small_agent(**kwargs) -> ActorCritic:
    defaults = dict(units=64, horizon=15, actor_lr=1e-3, critic_lr=1e-3)
    return ActorCritic(2, 1, **{**defaults, **kwargs})


def mean_return(agent: ActorCritic, model: PointModel, start: torch.Tensor) -> float:
    with torch.no_grad():
        states, _ = model.imagine({"x": start}, agent.horizon, policy=lambda f: agent.policy(f, sample=False))
        return model.predict_reward(model.features(states)).sum(1).mean().item()


def test_lambda_returns_hand_computed():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[10.0, 20.0, 30.0]])
    continues = torch.tensor([[0.9, 0.9, 0.5]])
    bootstrap = torch.tensor([40.0])
    # R2 = 3 + .5(.5·40 + .5·40) = 23; R1 = 2 + .9(.5·30 + .5·23) = 25.85; R0 = 1 + .9(.5·20 + .5·25.85)
    expected = torch.tensor([[21.6325, 25.85, 23.0]])
    torch.testing.assert_close(lambda_returns(rewards, values, continues, bootstrap, 0.5), expected)
    td = torch.tensor([[1 + 0.9 * 20, 2 + 0.9 * 30, 3 + 0.5 * 40]])
    torch.testing.assert_close(lambda_returns(rewards, values, continues, bootstrap, 0.0), td)
    monte_carlo = torch.tensor([[1 + 0.9 * (2 + 0.9 * 23), 2 + 0.9 * 23, 23.0]])
    torch.testing.assert_close(lambda_returns(rewards, values, continues, bootstrap, 1.0), monte_carlo)


def test_actions_within_bounds_and_rescaled():
    low, high = torch.tensor([-2.0, 0.0, 1.0]), torch.tensor([2.0, 0.5, 3.0])
    agent = ActorCritic(4, 3, low, high, units=32)
    features = torch.randn(512, 4) * 10
    actions = agent.act(features)
    assert actions.shape == (512, 3)
    assert ((actions >= low) & (actions <= high)).all()
    normalised = agent.policy(features)
    assert normalised.abs().max() <= 1.0
    torch.testing.assert_close(agent.to_env(torch.tensor([-1.0, 1.0, 0.0])), torch.tensor([-2.0, 0.5, 2.0]))
    torch.testing.assert_close(agent.from_env(agent.to_env(normalised)), normalised)
    deterministic = agent.act(features, sample=False)
    torch.testing.assert_close(deterministic, agent.act(features, sample=False))
    with pytest.raises(ValueError):
        ActorCritic(4, 1, 1.0, -1.0)
    with pytest.raises(ValueError, match="actor_grad must be one of"):
        ActorCritic(4, 1, actor_grad="dynamics")


def test_clipped_log_prob_is_unbiased():
    """E[∇ log π(clip(a))] = 0 with the censored likelihood; the plain density is biased near a bound."""
    torch.manual_seed(0)
    loc, scale = torch.tensor([0.9], requires_grad=True), torch.tensor([0.5])
    dist = torch.distributions.Normal(loc, scale)
    actions = dist.sample((200_000,)).clamp(-1.0, 1.0)
    (grad,) = torch.autograd.grad(ActorCritic.log_prob(dist, actions).mean(), loc)
    (biased,) = torch.autograd.grad(dist.log_prob(actions).mean(), loc)
    assert abs(grad.item()) < 0.02 < abs(biased.item())
    torch.testing.assert_close(ActorCritic.log_prob(dist, torch.ones(1, 1)),
                               torch.distributions.Normal(0.0, 1.0).cdf(torch.tensor([-0.2])).log())


@pytest.mark.parametrize("reparameterise", [True, False])
def test_imagination_policy_reads_stop_gradient_features(reparameterise):
    """DreamerV3's actor(sg(s)): no gradient reaches the features through the actor's input; the
    recorded distribution carries gradients to the actor even inside a no-grad rollout (REINFORCE)."""
    agent = small_agent()
    features = torch.randn(8, 2, requires_grad=True)
    taken = []
    with torch.set_grad_enabled(reparameterise):
        action = agent._imagination_policy(reparameterise, taken)(features)
    assert action.shape == (8, 1) and action.abs().max() <= 1.0 and len(taken) == 1
    assert action.requires_grad == reparameterise
    loc_grads = torch.autograd.grad(taken[0].loc.sum() + taken[0].scale.sum(), [features, *agent.actor.parameters()],
                                    allow_unused=True)
    assert loc_grads[0] is None and all(grad is not None for grad in loc_grads[1:])
    if reparameterise:
        assert torch.autograd.grad(action.sum(), features, allow_unused=True)[0] is None


def test_return_normalizer():
    small = ReturnNormalizer(decay=0.99)
    for _ in range(50):
        scale = small(torch.rand(1000) * 0.5)
    assert scale.item() == 1.0
    large = ReturnNormalizer(decay=0.0)
    returns = torch.linspace(0.0, 100.0, 1001)
    assert large(returns).item() == pytest.approx(90.0)
    ema = ReturnNormalizer(decay=0.99)
    ema(returns)
    assert ema.range_ema.item() == pytest.approx(0.9)  # 1% of the first range, from 0
    for _ in range(1000):
        scale = ema(returns)
    assert scale.item() == pytest.approx(90.0, rel=1e-3)


@pytest.mark.parametrize("actor_grad, precision", [("backprop", "fp32"), ("reinforce", "fp32"), ("backprop", "bf16"),
                                                       ("backprop", "bf16_full")])
def test_learns_on_point_model(actor_grad, precision):
    torch.manual_seed(0)
    model, agent = PointModel(), small_agent(actor_grad=actor_grad)
    eval_start = torch.linspace(-1.5, 1.5, 64).unsqueeze(-1)
    with torch.no_grad():  # head for 0.5 at full speed
        best, _ = model.imagine({"x": eval_start}, agent.horizon,
                                policy=lambda f: ((0.5 - f[..., :1]) * 10).clamp(-1, 1))
    optimal = model.predict_reward(model.features(best)).sum(1).mean().item()
    before = mean_return(agent, model, eval_start)
    for _ in range(100):
        with compute_precision(torch.device("cpu"), precision):
            metrics = agent.update(model, {"x": torch.rand(4, 16, 1) * 3.0 - 1.5})
    after = mean_return(agent, model, eval_start)
    assert set(metrics) == {"actor/loss", "actor/entropy", "critic/loss", "return/mean", "return/norm_scale",
                            "imag/reward_mean", "value/mean", "actor/grad_norm", "critic/grad_norm"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert optimal - after < 0.3 * (optimal - before), (before, after, optimal)


def test_update_with_continue_head_and_flat_start():
    class EndingPointModel(PointModel):
        def predict_continue(self, features: torch.Tensor) -> torch.Tensor:
            return (features[..., 0] < 1.0).float()

    starts = {"x": torch.rand(32, 1) * 3.0 - 1.5}  # flat (N, ...) starts, not (B, T, ...)
    returns = []
    for model in (PointModel(), EndingPointModel()):
        torch.manual_seed(0)
        metrics = small_agent().update(model, starts)
        assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
        returns.append(metrics["return/mean"])
    assert returns[1] != pytest.approx(returns[0], rel=1e-3)  # episodes that end stop the λ-returns' sums


def test_state_dict_round_trip():
    model = PointModel()
    torch.manual_seed(1)
    agent = small_agent()
    for _ in range(3):
        agent.update(model, {"x": torch.rand(8, 4, 1)})
    buffer = io.BytesIO()
    torch.save(agent.full_state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(2)
    restored = small_agent()
    restored.load_full_state_dict(torch.load(buffer, weights_only=True))
    features = PointModel().features({"x": torch.randn(32, 1)})
    torch.testing.assert_close(restored.act(features, sample=False), agent.act(features, sample=False))
    torch.testing.assert_close(restored.value(features), agent.value(features))
    assert restored.return_norm.range_ema.item() == agent.return_norm.range_ema.item() != 0.0
    start = {"x": torch.rand(8, 4, 1)}
    torch.manual_seed(3)
    expected = agent.update(model, start)
    torch.manual_seed(3)
    assert restored.update(model, start) == expected
    for a, b in zip(agent.state_dict().values(), restored.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_discount_stays_float32_without_a_continue_head_under_bf16(monkeypatch):
    from wm_robotics.behaviors import actor_critic

    seen = []
    monkeypatch.setattr(actor_critic, "lambda_returns", lambda *args: seen.append(args[2]) or lambda_returns(*args))
    with compute_precision(torch.device("cpu"), "bf16"):  # bf16 features; a bf16 discount 0.999 would be 1.0
        small_agent(discount=0.999).update(PointModel(), {"x": torch.rand(4, 1)})
    assert seen[0].dtype == torch.float32 and torch.all(seen[0] == torch.tensor(0.999))


def test_bf16_features_cast_once_give_the_update_autocast_gives(monkeypatch):
    from wm_robotics.models import base
    from wm_robotics.models.rssm import RSSMWorldModel

    def one_update() -> torch.Tensor:
        torch.manual_seed(0)
        model = RSSMWorldModel.from_size("xs", {"proprio": (5,)}, 1, deter=32, units=32)
        behavior = ActorCritic(model.feature_dim, 1, units=32, horizon=4)
        start = model.initial(6)
        start["deter"] = torch.randn(6, 32)
        with compute_precision(torch.device("cpu"), "bf16"):
            behavior.update(model, start)
        return torch.cat([p.detach().flatten() for p in behavior.parameters()])

    once = one_update()
    monkeypatch.setattr(base, "in_compute_dtype", lambda features: features)  # autocast casts per layer
    assert torch.equal(once, one_update())


class EndingPoint(PointModel):
    def predict_continue(self, features):  # varies along the trajectory, so the loss weights matter
        return torch.sigmoid(3 * features[..., 0])


@pytest.mark.parametrize("actor_grad", ["backprop", "reinforce"])
def test_update_losses_match_their_formulas(actor_grad):
    torch.manual_seed(0)
    model = EndingPoint()
    agent = ActorCritic(2, 1, units=32, horizon=5, entropy=0.1, actor_grad=actor_grad)
    with torch.no_grad():  # a critic with state-dependent values, and a different slow critic
        torch.nn.init.normal_(agent.critic[-1].weight, std=3.0)
        torch.nn.init.normal_(agent.slow_critic[-1].weight, std=3.0)
    before = copy.deepcopy(agent)
    start = {"x": torch.rand(16, 1) * 2 - 1}
    torch.manual_seed(1)
    metrics = agent.update(model, start)

    torch.manual_seed(1)  # the same draws, with the agent as it was before the update
    taken = []
    with torch.no_grad():
        policy = before._imagination_policy(actor_grad == "backprop", taken)
        features, actions = model.imagine_features(start, 5, policy)
        rewards = model.predict_reward(features[:, 1:])
        cont = model.predict_continue(features)
        continues = 0.997 * cont[:, 1:]
        weight = torch.stack([cont[:, 0] * continues[:, :t].prod(1) for t in range(5)], 1)  # cont(s0)·Π_{k=1..t}
        logits = before.critic(features)
        values = before.twohot.decode(logits)
        returns = lambda_returns(rewards, values[:, :-1], continues, values[:, -1], 0.95)
        slow = before.twohot.decode(before.slow_critic(features[:, :-1]))
        critic = (before.twohot.loss(logits[:, :-1], returns) + before.twohot.loss(logits[:, :-1], slow)) * weight
        dist = torch.distributions.Normal(torch.stack([d.loc for d in taken], 1),
                                          torch.stack([d.scale for d in taken], 1))
        scale = max(1.0, 0.01 * (returns.flatten().quantile(0.95) - returns.flatten().quantile(0.05)).item())
        if actor_grad == "backprop":
            objective = returns / scale
        else:
            objective = ActorCritic.log_prob(dist, actions) * (returns - values[:, :-1]) / scale
        actor = (weight * -(objective + 0.1 * dist.entropy().sum(-1))).mean()
    assert metrics["critic/loss"] == pytest.approx(critic.mean().item(), rel=1e-5)
    assert metrics["actor/loss"] == pytest.approx(actor.item(), rel=1e-5)
    for slow_p, old_p, new_p in zip(agent.slow_critic.parameters(), before.slow_critic.parameters(),
                                    agent.critic.parameters()):
        torch.testing.assert_close(slow_p, old_p + 0.02 * (new_p - old_p))
