"""JEPA world model terms by hand: EMA targets, Q heads, reward and TD targets, VICReg and the loss weights."""

import pytest
import torch

from tests.test_jepa import ACTIONS, linear_system, small
from wm_robotics.models.jepa import vicreg_terms

pytestmark = pytest.mark.usefixtures("one_torch_thread")
BUCKETS = torch.linspace(-10, 10, 101)  # the JEPA's default two-hot buckets (bins, vmin, vmax), in symlog space


def decoded(logits: torch.Tensor) -> torch.Tensor:
    """Two-hot logits → expected value, mapped back from symlog space."""
    x = (logits.softmax(-1) * BUCKETS).sum(-1)
    return torch.sign(x) * torch.expm1(x.abs())


def q_model(**kw):
    torch.manual_seed(0)
    model = small(num_q=2, policy=True, target="stopgrad", **kw)
    with torch.no_grad():
        for net in (model.q, model.target_q):
            torch.nn.init.normal_(net.out_weight, std=0.3)  # non-zero Q values, online and target apart
    return model


def test_after_step_moves_separate_target_copies_toward_the_online_nets_at_their_rates():
    torch.manual_seed(0)
    model = small(num_q=2, policy=True, target="ema", target_decay=0.9, q_tau=0.2)
    pairs = [(model.target_encoder, model.encoder, 0.1), (model.target_q, model.q, 0.2)]
    before = [[p.detach().clone() for p in target.parameters()] for target, _, _ in pairs]
    with torch.no_grad():
        for _, online, _ in pairs:
            for param in online.parameters():
                param.add_(1.0)  # the online nets one above their targets
    model.after_step()
    for (target, online, rate), old in zip(pairs, before):
        for moved, param, start in zip(target.parameters(), online.parameters(), old):
            torch.testing.assert_close(param, start + 1)
            torch.testing.assert_close(moved, start + rate)


def test_q_value_takes_the_min_or_mean_of_the_online_or_target_heads():
    model = q_model()
    z, a = torch.randn(4, 16).softmax(-1), torch.rand(4, ACTIONS) * 2 - 1
    for net, target in ((model.q, False), (model.target_q, True)):
        values = decoded(net(torch.cat([z, a], -1)))  # (2, 4)
        torch.testing.assert_close(model.q_value(z, a, "min", target=target), values.min(0).values)
        torch.testing.assert_close(model.q_value(z, a, "mean", target=target), values.mean(0))


def test_q_value_of_a_larger_ensemble_reads_two_random_heads():
    torch.manual_seed(0)
    model = small(num_q=5, policy=True)
    torch.nn.init.normal_(model.q.out_weight, std=0.3)
    z, a = torch.randn(8, 16).softmax(-1), torch.rand(8, ACTIONS) * 2 - 1
    values = decoded(model.q(torch.cat([z, a], -1)))  # (5, 8)
    pairs = set()
    for seed in range(6):
        torch.manual_seed(seed)
        low = model.q_value(z, a, "min")
        torch.manual_seed(seed)
        mean = model.q_value(z, a, "mean")
        pairs |= {(i, j) for i in range(5) for j in range(i + 1, 5)
                  if torch.allclose(low, values[[i, j]].min(0).values) and torch.allclose(mean, values[[i, j]].mean(0))}
    assert len(pairs) > 1


def test_reward_and_td_losses_match_a_hand_rollout_with_one_terminal_step():
    model = q_model(reward=True, horizon=2, rho=0.5, discount=0.9)
    with torch.no_grad():
        torch.nn.init.normal_(model.reward_head[-1].weight, std=0.3)
    model.pi = lambda z: (torch.tanh(40 * (z[..., :ACTIONS] - 1 / 8)), None)  # deterministic, reads the latent
    batch = linear_system(2, 5, torch.Generator().manual_seed(0))
    batch["is_terminal"][:, 3] = True
    with torch.no_grad():
        _, metrics, _ = model.loss(batch)
        action, reward, cont = batch["action"], batch["reward"], 1.0 - batch["is_terminal"].float()
        z = model.encoder({"proprio": batch["obs/proprio"]})  # (B, T, L)
        reward_loss, value_loss, tds = 0.0, 0.0, []
        for k in range(2):
            rew_k, val_k = [], []
            for b in range(2):
                for s in range(3):  # starts 0..T-horizon-1; step k arrives at observation t
                    t, latent = s + k + 1, z[b, s]
                    for j in range(k + 1):
                        before, latent = latent, model.next(latent, action[b, s + j + 1])
                    bootstrap = decoded(model.target_q(torch.cat([z[b, t], model.pi(z[b, t])[0]], -1))).min()
                    tds.append(reward[b, t] + 0.9 * cont[b, t] * bootstrap)
                    rew_k.append(model.twohot.loss(model.reward_head(latent), reward[b, t]))
                    logits = model.q(torch.cat([before, action[b, t]], -1))  # (num_q, bins)
                    val_k.append(model.twohot.loss(logits, tds[-1].expand(2)).mean())
            reward_loss += 0.5 ** k * torch.stack(rew_k).mean() / 2
            value_loss += 0.5 ** k * torch.stack(val_k).mean() / 2
    assert metrics["loss/reward"] == pytest.approx(reward_loss.item(), rel=1e-4)
    assert metrics["value/td_target"] == pytest.approx(torch.stack(tds).mean().item(), rel=1e-4)
    assert metrics["loss/value"] == pytest.approx(value_loss.item(), rel=1e-4)


def test_total_loss_weighs_the_terms_with_the_default_coefficients_and_returns_detached_rollouts():
    torch.manual_seed(0)
    model = small(reward=True, num_q=2, policy=True, probe_decoder=True)
    batch = linear_system(4, 5, torch.Generator().manual_seed(0))
    loss, metrics, states = model.loss(batch)
    expected = (20 * metrics["loss/consistency"] + 0.1 * metrics["loss/reward"] + 0.1 * metrics["loss/value"]
                + metrics["loss/probe"])
    assert loss.item() == pytest.approx(expected, rel=1e-5) and metrics["loss/total"] == pytest.approx(expected, 1e-5)
    assert states["latent"].shape == (8, 4, 16) and not states["latent"].requires_grad
    start = model.encoder({"proprio": batch["obs/proprio"][:, :2]}).flatten(0, 1)  # (B·S, L)
    assert metrics["latent/std"] == pytest.approx(start.std(0).mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="horizon must be at least 1, got 0"):
        small(horizon=0)


def test_vicreg_terms_match_hand_values():
    z = torch.tensor([[0.5, 0.0], [0.0, 0.2], [-0.5, -0.2]]) + 7.0  # the terms ignore the mean
    variance, covariance = vicreg_terms(z)
    # per-dim std sqrt(var + 1e-4) with unbiased var 0.25 and 0.04, hinged at 1 and averaged
    assert variance.item() == pytest.approx((2 - 0.2501 ** 0.5 - 0.0401 ** 0.5) / 2, rel=1e-5)
    # off-diagonal covariance 0.1 / (3 - 1) = 0.05, twice, squared and summed, over 2 dims
    assert covariance.item() == pytest.approx(2 * 0.05 ** 2 / 2, rel=1e-4)


def test_vicreg_terms_train_the_online_encoder_and_weigh_into_the_total():
    torch.manual_seed(0)
    model = small(target="online", simnorm=False, vicreg_var=1.0, vicreg_cov=0.04)
    batch = linear_system(8, 5, torch.Generator().manual_seed(0))
    loss, metrics, _ = model.loss(batch)
    variance, covariance = vicreg_terms(model.encoder({"proprio": batch["obs/proprio"][:, :2]}).flatten(0, 1))
    assert metrics["loss/vicreg_var"] == pytest.approx(variance.item(), rel=1e-5)
    assert metrics["loss/vicreg_cov"] == pytest.approx(covariance.item(), rel=1e-5)
    expected = 20 * metrics["loss/consistency"] + variance.item() + 0.04 * covariance.item()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    model.coefs["loss/consistency"] = 0.0
    model.loss(batch)[0].backward()
    assert any(p.grad is not None and p.grad.any() for p in model.encoder.parameters())
