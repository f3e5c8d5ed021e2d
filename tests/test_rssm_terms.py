"""RSSM details: the GRU's reset gate, unimix and the loss's KL and entropy metrics, posteriors, features, resets."""

import math

import pytest
import torch

from tests.tiny_models import RSSM_TINY, random_batch
from wm_robotics.models.rssm import RSSM, SIZES, NormGRUCell, RSSMWorldModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROPRIO = {"proprio": (5,)}


def obs_of(batch):
    return {key[4:]: value for key, value in batch.items() if key.startswith("obs/")}


def test_gru_gates_follow_the_dreamerv3_cell():
    cell = NormGRUCell(3, 2)
    with torch.no_grad():  # the LayerNorm's output is its bias: reset (0, 0), candidate (2, -1), update (2, 0)
        cell.norm.weight.zero_()
        cell.norm.bias.copy_(torch.tensor([0.0, 0.0, 2.0, -1.0, 2.0, 0.0]))
    h = torch.tensor([[0.5, -1.0]])
    cand = [math.tanh(0.5 * 2.0), math.tanh(0.5 * -1.0)]  # tanh(sigmoid(reset) · candidate)
    update = [1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(1.0))]  # sigmoid(update - 1)
    expected = torch.tensor([[0.5 + update[0] * (cand[0] - 0.5), -1.0 + update[1] * (cand[1] + 1.0)]])
    torch.testing.assert_close(cell(torch.randn(1, 3), h), expected)


def test_loss_metrics_with_a_uniform_posterior_a_peaked_prior_and_an_undecided_continue_head():
    torch.manual_seed(0)
    model = RSSMWorldModel(PROPRIO, 2, **RSSM_TINY)  # default unimix 0.01, free bits 1, kl weights 0.5 and 0.1
    stoch, classes = RSSM_TINY["stoch"], RSSM_TINY["classes"]
    with torch.no_grad():
        for layer in (model.rssm.post_net[-1], model.rssm.prior_net[-1], model.continue_head[-1]):
            layer.weight.zero_()
            layer.bias.zero_()
        model.rssm.prior_net[-1].bias[::classes] = 1.0  # raw prior logits (1, 0, 0, 0, 0) per categorical
    softmax = [math.e / (math.e + 4)] + [1 / (math.e + 4)] * 4
    prior = [0.99 * p + 0.01 / classes for p in softmax]
    kl = stoch * sum(math.log(1 / classes) - math.log(p) for p in prior) / classes  # KL(uniform || prior) = 0.375
    _, metrics, _ = model.loss(random_batch(PROPRIO, 2))
    assert metrics["kl/value"] == pytest.approx(kl, rel=1e-5)
    assert metrics["loss/continue"] == pytest.approx(math.log(2), rel=1e-5)  # p = 0.5, averaged over (B, T)
    assert metrics["kl/dyn"] == metrics["kl/rep"] == 1.0  # below the free bit
    assert metrics["entropy/posterior"] == pytest.approx(stoch * math.log(classes), rel=1e-5)
    assert metrics["entropy/prior"] == pytest.approx(-stoch * sum(p * math.log(p) for p in prior), rel=1e-5)
    losses = sum(value for key, value in metrics.items() if key.startswith("loss/") and key != "loss/total")
    assert metrics["loss/total"] == pytest.approx(losses + 0.5 * 1.0 + 0.1 * 1.0, rel=1e-5)


def test_default_kl_weights_are_half_for_dyn_and_a_tenth_for_rep():
    def grads(**kl_weights):
        torch.manual_seed(0)
        model = RSSMWorldModel(PROPRIO, 2, **RSSM_TINY, free_bits=0.0, **kl_weights)
        model.loss(random_batch(PROPRIO, 2))[0].backward()
        prior, post = model.rssm.prior_net[-1].weight.grad, model.rssm.post_net[-1].weight.grad
        return prior, post

    prior, post = grads()
    torch.testing.assert_close(prior, 0.5 * grads(kl_dyn=1.0)[0])  # only the dyn term reaches the prior
    without_rep, with_rep = grads(kl_rep=0.0)[1], grads(kl_rep=1.0)[1]
    torch.testing.assert_close(post - without_rep, 0.1 * (with_rep - without_rep), atol=1e-6, rtol=1e-4)


def test_posterior_depends_on_the_deterministic_state():
    torch.manual_seed(0)
    model = RSSMWorldModel(PROPRIO, 2, **RSSM_TINY)
    obs, action, not_first = {"proprio": torch.randn(3, 5)}, torch.randn(3, 2), torch.zeros(3, dtype=torch.bool)
    states = [model.initial(3) for _ in range(2)]
    states[1]["deter"] = torch.randn(3, RSSM_TINY["deter"])
    with torch.no_grad():
        first, second = (model.step(state, action, obs, not_first)["logits"] for state in states)
    assert (first - second).abs().amax((-2, -1)).min() > 1e-3


def test_observe_zeroes_the_action_into_an_episode_start():
    torch.manual_seed(0)
    model = RSSMWorldModel(PROPRIO, 2, **RSSM_TINY)
    batch = random_batch(PROPRIO, 2)  # every sequence starts an episode
    zeroed = batch["action"].clone()
    zeroed[:, 0] = 0.0
    with torch.no_grad():
        posts, _ = model.observe(obs_of(batch), batch["action"], batch["is_first"])
        expected, _ = model.observe(obs_of(batch), zeroed, batch["is_first"])
        continued, _ = model.observe(obs_of(batch), batch["action"], torch.zeros_like(batch["is_first"]))
    torch.testing.assert_close(posts["deter"][:, 0], expected["deter"][:, 0])
    torch.testing.assert_close(posts["logits"][:, 0], expected["logits"][:, 0])
    assert not torch.allclose(continued["deter"][:, 0], expected["deter"][:, 0])


def test_features_are_h_then_the_flattened_one_hot_z():
    rssm = RSSM(1, 4, deter=2, stoch=2, classes=3, units=4)
    state = {"deter": torch.tensor([[7.0, 8.0]]), "stoch": torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])}
    torch.testing.assert_close(rssm.features(state), torch.tensor([[7.0, 8.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]]))


def test_a_threshold_rounded_past_the_last_cumulative_probability_still_draws_the_last_class(monkeypatch):
    rssm = RSSM(1, 4, deter=8, stoch=1, classes=4, units=8, unimix=0.0)
    log_probs = torch.tensor([[[0.1, 0.2, 0.3, 0.4]]]).log()
    monkeypatch.setattr(torch, "rand_like", lambda x: torch.full_like(x, 1.0 + 1e-6))  # past the float sum
    torch.testing.assert_close(rssm._sample(log_probs), torch.tensor([[[0.0, 0.0, 0.0, 1.0]]]))


def test_size_presets_follow_the_dreamerv3_table():
    table = {"s": (512, 32, 512, 2), "m": (1024, 48, 640, 3), "l": (2048, 64, 768, 4)}  # GRU, CNN, MLP units, layers
    for size, (deter, cnn_depth, units, layers) in table.items():
        assert SIZES[size] == dict(deter=deter, units=units, stoch=32, classes=32, layers=layers, cnn_depth=cnn_depth)
