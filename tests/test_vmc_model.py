"""World Models' V and M on their own: what is sampled, what is clamped, and the loss terms by hand."""

import math

import pytest
import torch

from tests.tiny_models import VMC_TINY, random_batch
from wm_robotics.models.mdn_rnn import MDNRNN, mdn_sample
from wm_robotics.models.vae import ConvVAE
from wm_robotics.models.vmc import VMCWorldModel

MEAN, LOGVAR = [0.5, -1.0, 2.0, 0.0], [math.log(4.0)] * 4  # q(z | o) = N(MEAN, 2²) once the stats layer's weight is 0


def _fixed_posterior(vae: ConvVAE) -> None:
    with torch.no_grad():
        vae.to_stats.weight.zero_()
        vae.to_stats.bias.copy_(torch.tensor(MEAN + LOGVAR))


def test_step_samples_z_from_the_posterior(one_torch_thread):
    torch.manual_seed(0)
    model = VMCWorldModel({"proprio": (5,)}, 1, **VMC_TINY)
    _fixed_posterior(model.vae)
    obs, first = {"proprio": torch.randn(2, 5)}, torch.ones(2, dtype=torch.bool)
    torch.manual_seed(3)
    z = model.step(model.initial(2), torch.zeros(2, 1), obs, first)["z"]
    torch.manual_seed(3)
    torch.testing.assert_close(z, torch.tensor(MEAN) + 2.0 * torch.randn(2, 4))


def test_vae_loss_returns_the_sampled_z():
    torch.manual_seed(0)
    vae = ConvVAE({"proprio": (5,)}, z_dim=4, units=16)
    _fixed_posterior(vae)
    obs = {"proprio": torch.randn(3, 5)}
    torch.manual_seed(3)
    _, kl, z = vae.loss(obs)
    torch.manual_seed(3)
    torch.testing.assert_close(z, torch.tensor(MEAN) + 2.0 * torch.randn(3, 4))
    expected_kl = 0.5 * sum(m * m + 4.0 - 1.0 - 2.0 * math.log(2.0) for m in MEAN)
    torch.testing.assert_close(kl, torch.full((3,), expected_kl))


def test_reparameterised_sample_passes_gradients_to_mean_and_std():
    mean, std = torch.zeros(3, 4, requires_grad=True), torch.ones(3, 4, requires_grad=True)
    torch.manual_seed(5)
    ConvVAE.sample(mean, std).sum().backward()
    torch.manual_seed(5)
    torch.testing.assert_close(std.grad, torch.randn(3, 4))
    torch.testing.assert_close(mean.grad, torch.ones(3, 4))


@pytest.mark.parametrize("logvar, std", [(40.0, math.exp(3.0)), (-40.0, math.exp(-6.0))])
def test_posterior_log_variance_is_clamped(logvar, std):
    vae = ConvVAE({"proprio": (5,)}, z_dim=4, units=16)
    with torch.no_grad():
        vae.to_stats.weight.zero_()
        vae.to_stats.bias[4:] = logvar
        _, out = vae.posterior({"proprio": torch.randn(2, 5)})
    torch.testing.assert_close(out, torch.full((2, 4), std))


@pytest.mark.parametrize("bias, log_std", [(50.0, 3.0), (-50.0, -7.0)])
def test_mixture_log_std_is_clamped(bias, log_std):
    rnn = MDNRNN(z_dim=2, action_dim=1, hidden=4, mixtures=3)
    with torch.no_grad():
        rnn.head.weight.zero_()
        rnn.head.bias.fill_(bias)
        _, _, out = rnn.mixture(torch.randn(5, 4))
    torch.testing.assert_close(out, torch.full((5, 2, 3), log_std))


def test_sampling_picks_each_of_three_components_by_its_weight():
    gen = torch.Generator().manual_seed(0)
    shape = (40_000, 1, 3)
    mixture = (torch.log(torch.tensor([0.6, 0.3, 0.1])).expand(shape), torch.tensor([-10.0, 0.0, 10.0]).expand(shape),
               torch.full(shape, math.log(1e-3)))
    z = mdn_sample(mixture, 1.0, gen)
    shares = [float((z < -5).float().mean()), float((z.abs() < 5).float().mean()), float((z > 5).float().mean())]
    assert shares == pytest.approx([0.6, 0.3, 0.1], abs=0.01)


def test_features_are_z_then_h():
    model = VMCWorldModel({"proprio": (5,)}, 1, **VMC_TINY)
    state = {"z": torch.full((2, 4), 1.0), "h": torch.full((2, 16), 2.0), "c": torch.full((2, 16), 3.0)}
    torch.testing.assert_close(model.features(state), torch.tensor([[1.0] * 4 + [2.0] * 16] * 2))


def test_continue_probability_is_the_sigmoid_of_the_head():
    model = VMCWorldModel({"proprio": (5,)}, 1, **VMC_TINY)
    with torch.no_grad():
        model.continue_head[-1].weight.zero_()
        model.continue_head[-1].bias.fill_(2.0)
        cont = model.predict_continue(torch.randn(3, model.feature_dim))
    torch.testing.assert_close(cont, torch.full((3,), 1.0 / (1.0 + math.exp(-2.0))))


def test_reward_and_continue_losses_by_hand(one_torch_thread):
    torch.manual_seed(0)
    model = VMCWorldModel({"proprio": (5,)}, 1, **VMC_TINY)
    with torch.no_grad():
        model.reward_head[-1].bias.fill_(0.5)
        model.continue_head[-1].weight.zero_()
        model.continue_head[-1].bias.fill_(2.0)
    batch = random_batch({"proprio": (5,)}, 1, batch=3, length=6)  # one terminal step among 18
    _, metrics, _ = model.loss(batch)
    assert metrics["loss/reward"] == pytest.approx(float((0.5 - batch["reward"]).square().mean()), rel=1e-5)
    expected = (17 * math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(2.0))) / 18
    assert metrics["loss/continue"] == pytest.approx(expected, rel=1e-5)


def test_image_loss_is_the_per_frame_pixel_error_averaged_over_frames(one_torch_thread):
    torch.manual_seed(0)
    model = VMCWorldModel({"pixels": (64, 64, 3)}, 1, **VMC_TINY)
    batch = random_batch({"pixels": (64, 64, 3)}, 1, batch=2, length=3)
    _, metrics, _ = model.loss(batch)  # the decoder starts at mid-grey: its error is the frame's distance to 0.5
    per_frame = (batch["obs/pixels"].double() / 255.0 - 0.5).square().sum((-3, -2, -1))
    assert metrics["loss/image"] == pytest.approx(float(per_frame.mean()), rel=1e-5)


def test_without_frames_v_learns_from_its_own_loss_only(one_torch_thread):
    torch.manual_seed(0)
    model = VMCWorldModel({"proprio": (5,)}, 1, **VMC_TINY)
    batch = random_batch({"proprio": (5,)}, 1, batch=3, length=6)

    def vae_grads(actions: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(0)
        model.loss({**batch, "action": actions})[0].backward()
        return [p.grad.clone() for p in model.vae.parameters()]

    for first, second in zip(vae_grads(batch["action"]), vae_grads(-batch["action"])):
        torch.testing.assert_close(first, second)


def test_kl_warmup_of_one_update_starts_at_zero():
    model = VMCWorldModel({"proprio": (5,)}, 1, kl_weight=2.0, kl_warmup=1, **VMC_TINY)
    assert float(model.kl_scale) == 0.0
    model.after_step()
    assert float(model.kl_scale) == 2.0


@pytest.mark.parametrize("name", ["temperature", "kl_weight", "kl_free", "kl_warmup", "vae_batch"])
def test_negative_settings_are_rejected(name):
    with pytest.raises(ValueError, match="must be >= 0"):
        VMCWorldModel({"proprio": (5,)}, 1, **VMC_TINY, **{name: -1})


def test_size_bounds_of_v_and_m():
    with pytest.raises(ValueError, match="hidden and mixtures must be positive"):
        MDNRNN(z_dim=2, action_dim=1, hidden=4, mixtures=0)
    vae = ConvVAE({"proprio": (5,)}, z_dim=4, units=16, init_std=1.0)  # a unit-std posterior is allowed
    with torch.no_grad():
        vae.to_stats.weight.zero_()
        _, std = vae.posterior({"proprio": torch.randn(2, 5)})
    torch.testing.assert_close(std, torch.ones(2, 4))
