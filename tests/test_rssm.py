"""RSSM world model: seam shapes, KL free bits, resets, learning on a tiny task, presets."""

import math

import numpy as np
import pytest
import torch

from tests.tiny_models import RSSM_TINY, random_batch
from wm_robotics.models.encoders import ObservationDecoder, ObservationEncoder
from wm_robotics.models.rssm import RSSM, SIZES, NormGRUCell, RSSMWorldModel, kl_loss
from wm_robotics.precision import compute_precision

OBS_SHAPES = {
    "pixels": {"pixels": (64, 64, 3)},
    "proprio": {"proprio": (5,)},
    "both": {"pixels": (64, 64, 3), "proprio": (5,)},
}
A = 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def obs_of(batch):
    return {key[4:]: value for key, value in batch.items() if key.startswith("obs/")}


def check_state(model, state, lead):
    assert state["deter"].shape == (*lead, RSSM_TINY["deter"])
    assert state["stoch"].shape == (*lead, RSSM_TINY["stoch"], RSSM_TINY["classes"])
    assert state["logits"].shape == state["stoch"].shape
    torch.testing.assert_close(state["stoch"].detach().sum(-1), torch.ones(*lead, RSSM_TINY["stoch"]))
    torch.testing.assert_close(state["logits"].exp().sum(-1), torch.ones(*lead, RSSM_TINY["stoch"]))
    assert model.features(state).shape == (*lead, model.feature_dim)
    assert all(value.dtype == torch.float32 for value in state.values())


def test_categorical_samples_are_one_hot_follow_the_probabilities_and_pass_gradients_straight_through():
    torch.manual_seed(0)
    rssm = RSSM(1, 4, deter=8, stoch=2, classes=4, units=8, unimix=0.0)
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.0, 0.5, 0.0, 0.5]])  # a zero-probability class is never drawn
    log_probs = probs.log().expand(20_000, 2, 4).clone().requires_grad_(True)
    sample = rssm._sample(log_probs)
    assert (set(sample.detach().unique().tolist()) == {0.0, 1.0}
            and torch.equal(sample.detach().sum(-1), torch.ones(20_000, 2)))
    torch.testing.assert_close(sample.detach().mean(0), probs, atol=0.01, rtol=0)
    weights = torch.randn(2, 4)
    (sample * weights).sum().backward()
    torch.testing.assert_close(log_probs.grad, (weights * probs).expand(20_000, 2, 4))  # d/d log p of p · w


@pytest.mark.parametrize("keys", list(OBS_SHAPES))
def test_seam_shapes(keys):
    torch.manual_seed(0)
    shapes = OBS_SHAPES[keys]
    model = RSSMWorldModel(shapes, A, **RSSM_TINY)
    assert model.obs_keys == tuple(k for k in ("pixels", "proprio") if k in shapes)
    assert model.feature_dim == RSSM_TINY["deter"] + RSSM_TINY["stoch"] * RSSM_TINY["classes"]
    batch = random_batch(shapes, A)

    initial = model.initial(2)
    assert not initial["deter"].any() and not initial["stoch"].any()
    torch.testing.assert_close(initial["logits"].exp().sum(-1), torch.ones(2, RSSM_TINY["stoch"]))
    posts, last = model.observe(obs_of(batch), batch["action"], batch["is_first"])
    check_state(model, posts, (2, 3))
    check_state(model, last, (2,))

    stepped = model.step(last, batch["action"][:, 0], {k: v[:, 0] for k, v in obs_of(batch).items()},
                         torch.zeros(2, dtype=torch.bool))
    check_state(model, stepped, (2,))

    actions = torch.rand(2, 4, A)
    imagined, used = model.imagine(last, 4, actions=actions)
    check_state(model, imagined, (2, 4))
    assert torch.equal(used, actions)
    imagined, used = model.imagine(last, 4, policy=lambda f: torch.tanh(f[..., :A]))
    check_state(model, imagined, (2, 4))
    assert used.shape == (2, 4, A)

    feat = model.features(imagined)
    assert model.predict_reward(feat).shape == (2, 4)
    cont = model.predict_continue(feat)
    assert cont.shape == (2, 4) and ((cont >= 0) & (cont <= 1)).all()

    decoded = model.decode(posts)
    assert set(decoded) == set(shapes)
    if "pixels" in shapes:
        assert decoded["pixels"].shape == (2, 3, 64, 64, 3) and decoded["pixels"].dtype == torch.float32
        assert decoded["pixels"].min() >= 0 and decoded["pixels"].max() <= 1
    if "proprio" in shapes:
        assert decoded["proprio"].shape == (2, 3, 5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_imagine_features_are_the_features_of_imagine(precision):
    """The learner's rollout gives the start's and the imagined states' features (cast once to the compute
    dtype), the same states and actions as ``imagine`` under the same draws, and passes gradients."""
    model = RSSMWorldModel(OBS_SHAPES["proprio"], A, **RSSM_TINY)
    batch = random_batch(OBS_SHAPES["proprio"], A)
    _, start = model.observe(obs_of(batch), batch["action"], batch["is_first"])
    weight = torch.randn(model.feature_dim, A, requires_grad=True)
    policy = lambda f: torch.tanh(f.float() @ weight)  # noqa: E731
    with compute_precision(torch.device("cpu"), precision):
        torch.manual_seed(3)
        states, actions = model.imagine(start, 4, policy=policy)
        torch.manual_seed(3)
        features, used = model.imagine_features(start, 4, policy)
        expected = torch.cat([model.features(start).unsqueeze(1), model.features(states)], 1)
    assert features.shape == (2, 5, model.feature_dim) and used.shape == (2, 4, A)
    assert features.dtype == (torch.float32 if precision == "fp32" else torch.bfloat16)
    torch.testing.assert_close(features, expected.to(features.dtype))
    torch.testing.assert_close(used, actions)
    features[:, -1].float().sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0  # the last state depends on every action


@pytest.mark.parametrize("keys", list(OBS_SHAPES))
def test_loss_metrics_and_gradients(keys):
    torch.manual_seed(0)
    shapes = OBS_SHAPES[keys]
    model = RSSMWorldModel(shapes, A, **RSSM_TINY)
    total, metrics, posts = model.loss(random_batch(shapes, A))
    assert total.shape == () and torch.isfinite(total)
    expected = {"loss/total", "loss/reward", "loss/continue", "kl/dyn", "kl/rep", "kl/value",
                "entropy/posterior", "entropy/prior"}
    expected |= {"loss/image"} if "pixels" in shapes else set()
    expected |= {"loss/proprio"} if "proprio" in shapes else set()
    assert expected <= set(metrics) and all(type(v) is float for v in metrics.values())
    assert metrics["loss/total"] == pytest.approx(total.item())
    assert metrics["loss/reward"] == pytest.approx(math.log(255), rel=1e-3)  # zero-initialised head
    assert metrics["kl/dyn"] >= model.free_bits and metrics["kl/rep"] >= model.free_bits
    assert all(not v.requires_grad for v in posts.values()) and posts["deter"].shape[:2] == (2, 3)
    total.backward()
    for part in (model.encoder, model.rssm, model.decoder, model.continue_head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_batch_dtypes_and_numpy_are_converted():
    model = RSSMWorldModel(OBS_SHAPES["both"], A, **RSSM_TINY)
    tensors = random_batch(OBS_SHAPES["both"], A)
    batch = {k: v.numpy() for k, v in tensors.items()}
    batch["obs/proprio"] = batch["obs/proprio"].astype(np.float64)
    batch["is_first"] = batch["is_first"].astype(np.float32)
    torch.manual_seed(0)
    total, _, _ = model.loss(batch)
    torch.manual_seed(0)
    torch.testing.assert_close(total, model.loss(tensors)[0])  # the same loss as on the torch batch it came from


def test_free_bits_clip_constant_and_gradient_free():
    torch.manual_seed(0)
    prior = torch.log_softmax(torch.randn(3, 4, 32, 32), -1).requires_grad_()
    post = torch.log_softmax(prior.detach() + 0.01 * torch.randn(3, 4, 32, 32), -1).requires_grad_()
    dyn, rep, value = kl_loss(post, prior, free_bits=1.0)
    assert (value < 1.0).all() and (value > 0).all()
    torch.testing.assert_close(dyn, torch.ones(3, 4))
    torch.testing.assert_close(rep, torch.ones(3, 4))
    (dyn.sum() + rep.sum()).backward()
    assert torch.count_nonzero(prior.grad) == 0 and torch.count_nonzero(post.grad) == 0

    far = torch.log_softmax(torch.randn(3, 4, 32, 32) * 3, -1).requires_grad_()
    dyn, rep, value = kl_loss(post.detach(), far, free_bits=1.0)
    assert (value > 1.0).all()
    torch.testing.assert_close(dyn, value)
    dyn.sum().backward()
    assert torch.count_nonzero(far.grad) > 0


def test_kl_terms_in_model_loss_respect_free_bits():
    model = RSSMWorldModel(OBS_SHAPES["proprio"], A, **RSSM_TINY, free_bits=1e3)
    _, metrics, _ = model.loss(random_batch(OBS_SHAPES["proprio"], A))
    assert metrics["kl/dyn"] == pytest.approx(1e3) and metrics["kl/rep"] == pytest.approx(1e3)
    assert metrics["kl/value"] < 1e3


def test_is_first_resets_the_state():
    torch.manual_seed(0)
    model = RSSMWorldModel(OBS_SHAPES["proprio"], A, **RSSM_TINY)
    batch = random_batch(OBS_SHAPES["proprio"], A, length=6)
    obs, action, is_first = obs_of(batch), batch["action"], batch["is_first"].clone()
    is_first[:, 3] = True
    with torch.no_grad():
        posts, _ = model.observe(obs, action, is_first)
        fresh, _ = model.observe({k: v[:, 3:] for k, v in obs.items()}, action[:, 3:], is_first[:, 3:])
        # After a reset the (deterministic) h and posterior do not depend on the past.
        torch.testing.assert_close(posts["deter"][:, 3], fresh["deter"][:, 0])
        torch.testing.assert_close(posts["logits"][:, 3], fresh["logits"][:, 0])

        state = {k: v[:, 2] for k, v in posts.items()}
        first = torch.ones(2, dtype=torch.bool)
        one = {k: v[:, 3] for k, v in obs.items()}
        from_state = model.step(state, torch.randn(2, A), one, first)
        from_initial = model.step(model.initial(2), torch.zeros(2, A), one, first)
        torch.testing.assert_close(from_state["deter"], from_initial["deter"])
        torch.testing.assert_close(from_state["logits"], from_initial["logits"])
        kept = model.step(state, torch.randn(2, A), one, ~first)
        assert not torch.allclose(kept["deter"], from_initial["deter"])


@pytest.mark.parametrize("precision", ["fp32", "bf16", "bf16_full"])
def test_loss_falls_on_tiny_deterministic_data(precision):
    torch.manual_seed(0)
    t = torch.arange(16, dtype=torch.float32)
    phase = torch.arange(4, dtype=torch.float32).unsqueeze(-1)  # 4 sequences of length 16
    proprio = torch.stack([torch.sin(0.4 * t + phase), torch.cos(0.4 * t + phase), 0.1 * t.expand(4, 16)], -1)
    batch = {"obs/proprio": proprio, "action": torch.sin(0.7 * t + phase).unsqueeze(-1),
             "reward": torch.cos(0.4 * t + phase) + 1.0, "is_first": t.expand(4, 16) == 0,
             "is_terminal": torch.zeros(4, 16, dtype=torch.bool)}
    model = RSSMWorldModel.from_size("xs", {"proprio": (3,)}, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = None
    for _ in range(100):
        with compute_precision(torch.device("cpu"), precision):
            total, metrics, post = model.loss(batch)
        opt.zero_grad()
        total.backward()
        opt.step()
        first = first or metrics
    assert metrics["loss/total"] < 0.4 * first["loss/total"]
    assert metrics["loss/reward"] < 0.5 * first["loss/reward"]
    assert metrics["loss/proprio"] < 0.2 * first["loss/proprio"]
    assert total.dtype == post["logits"].dtype == torch.float32  # categorical logits stay float32 under bf16
    assert all(p.dtype == p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)


def test_from_size_presets_and_errors():
    model = RSSMWorldModel.from_size("xs", OBS_SHAPES["proprio"], A, deter=32)
    assert model.rssm.deter == 32 and model.config["deter"] == 32 and model.config["units"] == SIZES["xs"]["units"]
    assert set(SIZES) == {"xs", "s", "m", "l"}
    wide = RSSMWorldModel.from_size("s", OBS_SHAPES["proprio"], A, mlp_units=1024, mlp_layers=5)  # dreamerv3-torch's
    assert wide.encoder.out_dim == 1024 and 16e6 < sum(p.numel() for p in wide.parameters()) < 17e6
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in wide.decoder.modules()) == 5
    assert RSSMWorldModel.from_size("s", OBS_SHAPES["proprio"], A).encoder.out_dim == 512
    with pytest.raises(ValueError, match="xs, s, m, l"):
        RSSMWorldModel.from_size("huge", OBS_SHAPES["proprio"], A)
    with pytest.raises(ValueError, match=r"overrides \['detr'\].*'deter'"):  # a typo names the valid ones
        RSSMWorldModel.from_size("xs", OBS_SHAPES["proprio"], A, detr=32)


def test_wrong_image_size_and_keys_raise():
    with pytest.raises(ValueError, match="64x64"):
        ObservationEncoder({"pixels": (84, 84, 3)})
    with pytest.raises(ValueError, match="64x64"):
        ObservationDecoder(8, {"pixels": (32, 32, 3)})
    with pytest.raises(ValueError, match="subset"):
        ObservationEncoder({"depth": (64, 64, 1)})
    encoder = ObservationEncoder(OBS_SHAPES["pixels"], cnn_depth=2)
    with pytest.raises(ValueError, match="64x64"):
        encoder({"pixels": torch.zeros(1, 32, 32, 3, dtype=torch.uint8)})


def test_encoder_embedding_sizes():
    both = ObservationEncoder(OBS_SHAPES["both"], cnn_depth=2, mlp_units=7, mlp_layers=1)
    assert both.out_dim == 2 * 8 * 4 * 4 + 7
    obs = obs_of(random_batch(OBS_SHAPES["both"], A, batch=3, length=2))
    assert both(obs).shape == (3, 2, both.out_dim)
    assert [part.shape[-1] for part in both.parts(obs, ["proprio", "pixels"])] == [7, 2 * 8 * 4 * 4]  # keys' order
    with pytest.raises(ValueError, match=r"no part for \['depth'\]; its keys: \['pixels', 'proprio'\]"):
        both.parts(obs, ["depth"])


def test_kl_is_kl_of_posterior_from_prior_hand_computed():
    post = torch.tensor([[[0.9, 0.1]]]).log()
    prior = torch.tensor([[[0.5, 0.5]]]).log()
    _, _, value = kl_loss(post, prior, free_bits=0.0)
    assert value.item() == pytest.approx(0.9 * math.log(1.8) + 0.1 * math.log(0.2), rel=1e-5)  # 0.368, not 0.511


def test_dyn_trains_only_the_prior_and_rep_only_the_posterior():
    post = torch.randn(3, 4, 5).log_softmax(-1).requires_grad_()
    prior = torch.randn(3, 4, 5).log_softmax(-1).requires_grad_()
    dyn, rep, _ = kl_loss(post, prior, free_bits=0.0)
    assert torch.autograd.grad(rep.sum(), prior, allow_unused=True)[0] is None
    assert torch.autograd.grad(dyn.sum(), post, allow_unused=True)[0] is None


@pytest.mark.parametrize("kl_dyn, kl_rep, prior_trained", [(0.0, 0.1, False), (0.5, 0.0, True)])
def test_kl_coefficients_reach_the_right_networks(kl_dyn, kl_rep, prior_trained):
    torch.manual_seed(0)
    model = RSSMWorldModel({"proprio": (5,)}, 2, **RSSM_TINY, free_bits=0.0, kl_dyn=kl_dyn, kl_rep=kl_rep)
    total, _, _ = model.loss(random_batch({"proprio": (5,)}, 2))
    total.backward()
    grads = [p.grad for p in model.rssm.prior_net.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads) == prior_trained


def test_gru_keeps_most_of_h_when_its_inputs_vanish():
    cell = NormGRUCell(3, 4)
    torch.nn.init.zeros_(cell.linear.weight)  # reset = cand = update = 0 after the LayerNorm
    h = torch.randn(2, 4)
    torch.testing.assert_close(cell(torch.randn(2, 3), h), (1 - torch.sigmoid(torch.tensor(-1.0))) * h)


def test_continue_loss_and_prediction_follow_one_minus_is_terminal():
    torch.manual_seed(0)
    model = RSSMWorldModel({"proprio": (5,)}, 2, **RSSM_TINY)
    batch = random_batch({"proprio": (5,)}, 2, length=6)
    optimiser = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(60):
        total, metrics, post = model.loss(batch)
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
    cont = model.predict_continue(model.features(post))
    terminal = batch["is_terminal"]
    assert cont[~terminal].min() > 0.8 and cont[terminal].max() < 0.5, cont
