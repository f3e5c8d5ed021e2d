"""World Models' V (ConvVAE) and M (MDN-RNN), and VMCWorldModel behind the WorldModel seam."""

import json
import math

import imageio.v3 as iio
import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, Normal, kl_divergence

from tests.configs import ROOT, preset_config, run_script
from tests.tiny_models import VMC_TINY, random_batch
from wm_robotics.builders import build_world_model
from wm_robotics.checkpoint import load_checkpoint, save_checkpoint
from wm_robotics.models.mdn_rnn import MDNRNN, mdn_log_prob, mdn_sample
from wm_robotics.models.vae import ConvVAE, gaussian_kl
from wm_robotics.models.vmc import VMCWorldModel
from wm_robotics.temperature_sweep import markdown, temperature_sweep
from wm_robotics.train import Trainer


def _images(count: int) -> torch.Tensor:
    """Frames with a bright square at a different place each: structure a VAE can learn."""
    images = torch.zeros(count, 64, 64, 3, dtype=torch.uint8)
    for i in range(count):
        row, col = 8 * (i % 6), 8 * (i // 6)
        images[i, row:row + 16, col:col + 16] = torch.tensor([255, 128, 0], dtype=torch.uint8)
    return images


def test_vae_reconstruction_loss_falls_on_tiny_data(one_torch_thread):
    torch.manual_seed(0)
    vae = ConvVAE({"pixels": (64, 64, 3)}, z_dim=8, cnn_depth=4, units=32)
    optimizer = torch.optim.Adam(vae.parameters(), 2e-3)
    obs = {"pixels": _images(8)}
    losses = []
    for _ in range(40):
        recon, kl, _ = vae.loss(obs)
        loss = recon["pixels"].mean() + 0.1 * kl.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(recon["pixels"].detach().mean().item())
    assert losses[-1] < 0.5 * losses[0]


def test_vae_starts_with_a_narrow_posterior_and_a_mid_grey_decoder():
    vae = ConvVAE({"pixels": (64, 64, 3)}, z_dim=8, cnn_depth=4, units=32, init_std=0.05)
    obs = {"pixels": _images(4)}
    with torch.no_grad():
        _, std = vae.posterior(obs)
    assert float((std - 0.05).abs().max()) < 0.02  # the linear layer's weights add a little
    decoded = vae.decoder(torch.randn(4, 8))["pixels"]
    torch.testing.assert_close(decoded, torch.full_like(decoded, 0.5))
    with pytest.raises(ValueError, match="init_std"):
        ConvVAE({"pixels": (64, 64, 3)}, init_std=0.0)


def test_kl_weight_warms_up_over_updates_and_is_saved(one_torch_thread):
    model = VMCWorldModel({"proprio": (5,)}, 1, kl_weight=2.0, kl_warmup=4, **VMC_TINY)
    _, metrics, _ = model.loss(random_batch({"proprio": (5,)}, 1, batch=3, length=6))
    assert model.kl_scale == metrics["kl/beta"] == 0.0
    model.after_step()
    model.after_step()
    assert model.kl_scale == 1.0
    for _ in range(5):
        model.after_step()
    assert model.kl_scale == 2.0
    restored = VMCWorldModel({"proprio": (5,)}, 1, kl_weight=2.0, kl_warmup=4, **VMC_TINY)
    restored.load_state_dict(model.state_dict())
    assert int(restored.updates) == 7 and restored.kl_scale == 2.0
    assert VMCWorldModel({"proprio": (5,)}, 1, **VMC_TINY).kl_scale == 1.0  # no warm-up: full weight at once


def test_with_independent_frames_v_learns_from_them_alone(one_torch_thread):
    """The sequences feed M (no gradient into V); V's gradients depend only on ``frames/obs/pixels``."""
    model = VMCWorldModel({"pixels": (64, 64, 3)}, 1, vae_batch=5, **VMC_TINY)
    assert model.frames_per_update == 5
    frames = random_batch({"pixels": (64, 64, 3)}, 1, batch=5, length=1)["obs/pixels"][:, 0]

    def vae_grads(seed: int) -> list[torch.Tensor]:
        batch = {**random_batch({"pixels": (64, 64, 3)}, 1, batch=3, length=6, seed=seed), "frames/obs/pixels": frames}
        model.zero_grad()
        torch.manual_seed(0)
        model.loss(batch)[0].backward()
        return [p.grad.clone() for p in model.vae.parameters()]

    for first, second in zip(vae_grads(1), vae_grads(2)):
        torch.testing.assert_close(first, second)
    assert any(float(g.abs().sum()) > 0 for g in vae_grads(1))


def test_kl_is_zero_when_the_posterior_equals_the_prior():
    assert float(gaussian_kl(torch.zeros(3, 8), torch.ones(3, 8)).abs().max()) < 1e-6
    mean, std = torch.randn(5, 8), torch.rand(5, 8) + 0.2
    expected = kl_divergence(Normal(mean, std), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mean, std), expected)
    assert (gaussian_kl(mean, std) > 0).all()


def test_mdn_log_likelihood_matches_torch_distributions():
    torch.manual_seed(0)
    logits, mean, log_std = torch.randn(6, 4, 5), torch.randn(6, 4, 5), 0.3 * torch.randn(6, 4, 5)
    z = torch.randn(6, 4)
    mixture = MixtureSameFamily(Categorical(logits=logits), Normal(mean, log_std.exp()))
    torch.testing.assert_close(mdn_log_prob((logits, mean, log_std), z), mixture.log_prob(z).sum(-1))


def test_mdn_log_likelihood_of_one_component_by_hand():
    # one dimension, two components with weights 0.25 / 0.75: N(0, 1) and N(2, 0.5²) at z = 1
    logits = torch.log(torch.tensor([[[0.25, 0.75]]]))
    mean, log_std = torch.tensor([[[0.0, 2.0]]]), torch.log(torch.tensor([[[1.0, 0.5]]]))
    density = 0.25 * math.exp(-0.5) / math.sqrt(2 * math.pi) + 0.75 * math.exp(-2.0) / (0.5 * math.sqrt(2 * math.pi))
    assert float(mdn_log_prob((logits, mean, log_std), torch.tensor([[1.0]]))) == pytest.approx(math.log(density))


def test_sampling_at_zero_temperature_gives_the_mode_of_the_likeliest_component():
    logits = torch.tensor([[[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]]])  # (1, Z=2, K=3)
    mean = torch.tensor([[[-1.0, 5.0, 9.0], [0.5, 7.0, -7.0]]])
    log_std = torch.zeros(1, 2, 3)
    torch.testing.assert_close(mdn_sample((logits, mean, log_std), 0.0), torch.tensor([[5.0, 0.5]]))
    near_zero = mdn_sample((logits.expand(500, 2, 3), mean.expand(500, 2, 3), log_std.expand(500, 2, 3)), 1e-4)
    torch.testing.assert_close(near_zero, torch.tensor([[5.0, 0.5]]).expand(500, 2), atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        mdn_sample((logits, mean, log_std), -1.0)


def test_higher_temperature_widens_the_samples():
    generator = torch.Generator().manual_seed(0)
    shape = (20_000, 1, 2)
    mixture = (torch.tensor([1.0, 0.0]).expand(shape), torch.tensor([-1.0, 1.0]).expand(shape),
               torch.full(shape, math.log(0.3)))
    spread = [float(mdn_sample(mixture, tau, generator).std()) for tau in (0.5, 1.0, 1.5)]
    assert spread[0] < spread[1] < spread[2]
    # at τ = 1 the samples follow the mixture: weights softmax([1, 0]), std 0.3 around ±1
    weight = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    expected_var = 0.09 + 1.0 - float(weight[0] - weight[1]) ** 2
    assert spread[1] == pytest.approx(math.sqrt(expected_var), rel=0.03)


def test_mdn_rnn_shapes():
    rnn = MDNRNN(z_dim=4, action_dim=2, hidden=8, mixtures=3)
    h, c = rnn(torch.zeros(5, 4), torch.zeros(5, 2), (torch.zeros(5, 8), torch.zeros(5, 8)))
    assert [tuple(x.shape) for x in rnn.mixture(h)] == [(5, 4, 3)] * 3 and c.shape == (5, 8)


@pytest.mark.parametrize("keys", [("pixels",), ("proprio",)])
def test_world_model_seam(keys, one_torch_thread):
    shapes = {"pixels": (64, 64, 3), "proprio": (5,)}
    model = VMCWorldModel({key: shapes[key] for key in keys}, 1, **VMC_TINY)
    batch = random_batch({key: shapes[key] for key in keys}, 1, batch=3, length=6)
    loss, metrics, post = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and {"loss/mdn", "loss/kl", "loss/reward", "loss/continue"} <= set(metrics)
    assert post["z"].shape == (3, 6, 4) and post["h"].shape == (3, 6, 16) and not post["h"].requires_grad
    assert model.features(post).shape == (3, 6, model.feature_dim) == (3, 6, 20)
    states, actions = model.imagine({k: v[:, -1] for k, v in post.items()}, 7, policy=lambda f: f[..., :1].tanh())
    assert states["z"].shape == (3, 7, 4) and actions.shape == (3, 7, 1)
    assert model.predict_reward(model.features(states)).shape == (3, 7)
    assert model.predict_continue(model.features(states)).shape == (3, 7)
    decoded = model.decode(states)
    assert decoded[keys[0]].shape[:2] == (3, 7)
    obs = {key: batch[f"obs/{key}"][:, 0] for key in keys}
    step = model.step(model.initial(3), torch.zeros(3, 1), obs, torch.ones(3, dtype=torch.bool))
    assert step["h"].shape == (3, 16)


def test_episode_start_resets_the_recurrent_state(one_torch_thread):
    torch.manual_seed(0)
    model = VMCWorldModel({"proprio": (5,)}, 1, **VMC_TINY)
    obs, action = {"proprio": torch.randn(2, 5)}, torch.ones(2, 1)
    first = torch.ones(2, dtype=torch.bool)
    fresh = model.step(model.initial(2), action, obs, first)
    busy = {key: torch.randn_like(value) for key, value in fresh.items()}
    torch.testing.assert_close(model.step(busy, action, obs, first)["h"], fresh["h"])


def test_imagination_at_zero_temperature_is_deterministic_and_batched(one_torch_thread):
    torch.manual_seed(0)
    model = VMCWorldModel({"proprio": (5,)}, 1, **VMC_TINY, temperature=0.0)
    start = {key: torch.randn(4, value.shape[-1]) for key, value in model.initial(1).items()}
    actions = torch.rand(4, 5, 1) * 2 - 1
    together, _ = model.imagine(start, 5, actions=actions)
    alone, _ = model.imagine({k: v[2:3] for k, v in start.items()}, 5, actions=actions[2:3])
    torch.testing.assert_close(together["z"][2:3], alone["z"])
    with pytest.raises(ValueError, match="exactly one of"):
        model.imagine(start, 5)


def test_builder_sizes_and_errors():
    model = build_world_model({"kind": "vmc", "size": "xs", "overrides": {"hidden": 32}}, {"pixels": (64, 64, 3)}, 2)
    assert isinstance(model, VMCWorldModel) and model.feature_dim == 32 + 32
    with pytest.raises(ValueError, match="valid sizes: xs, s"):
        VMCWorldModel.from_size("xl", {"pixels": (64, 64, 3)}, 1)
    with pytest.raises(ValueError, match="must be >= 0"):
        VMCWorldModel({"proprio": (5,)}, 1, temperature=-1.0)


def test_preset_trains_resumes_sweeps_tau_and_its_checkpoint_evaluates_and_exports(tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(preset_config("world_models", "steps=120"), run)
    assert trainer.model.frames_per_update == 8  # V's independent frames come from the replay
    trainer.run()
    first = load_checkpoint(run)
    assert first["config"]["obs_mode"] == "pixels" and first["config"]["model"]["kind"] == "vmc"
    generation = first["behavior"]["last_metrics"]["cmaes/generation"]
    assert first["counters"]["updates"] > 0 and generation == first["counters"]["updates"]
    Trainer(preset_config("world_models", "steps=200", "resume=true"), run).run()
    second = load_checkpoint(run)
    assert second["counters"]["env_steps"] == 200
    assert second["behavior"]["last_metrics"]["cmaes/generation"] == second["counters"]["updates"] > generation

    sweep = temperature_sweep(run / "checkpoints", temperatures=(0.0, 1.5), generations=2, episodes=1, held_starts=16,
                              device="cpu")
    assert [row["temperature"] for row in sweep["rows"]] == [0.0, 1.5] and "| 1.5 |" in markdown(sweep)
    assert sweep["held_starts"] == 16  # two replay sequences of seq_len 8
    for row in sweep["rows"]:
        assert math.isfinite(row["dream_return"]) and math.isfinite(row["real_return"])
        assert row["dream_reward_per_step"] == pytest.approx(row["dream_return"] / sweep["horizon"])
        assert row["real_reward_per_step"] == pytest.approx(row["real_return"] / 20)  # max_episode_steps=20
        assert row["final_sigma"] != second["config"]["behavior"]["sigma"]  # the evolved step size, not the first
    second["config"]["behavior"]["kind"] = "actor_critic"
    save_checkpoint(tmp_path / "actor_critic.pt", second)
    with pytest.raises(ValueError, match="has behavior 'actor_critic'; the τ sweep evolves the CMA-ES controller"):
        temperature_sweep(tmp_path / "actor_critic.pt", device="cpu")

    out = run_script(ROOT / "scripts/evaluate.py", f"checkpoint={run}", "episodes=1", f"out={tmp_path / 'r.json'}",
                     "torch_threads=1", "context=3", "horizon=5", "windows_per_episode=2", "sensitivity=false",
                     "planner=policy", "planner_steps=2")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["model_kind"] == "vmc" and "pixel_mse" in report["open_loop"], out
    out = run_script(ROOT / "scripts/export_video.py", f"checkpoint={run}", "episodes=1", "max_episode_steps=12",
                     "context=3", "horizon=5", "size=64", f"out={tmp_path / 'dream.gif'}")
    assert "no pixel decoder" not in out
    frames = iio.imread(tmp_path / "dream.gif")
    assert frames.shape[0] == 13 and frames.shape[2] >= 3 * 64  # real | dreamed | error


def test_posterior_std_is_init_std_when_the_stats_layer_is_zero():
    vae = ConvVAE({"proprio": (5,)}, z_dim=4, units=16, init_std=0.05)
    with torch.no_grad():
        vae.to_stats.weight.zero_()
        mean, std = vae.posterior({"proprio": torch.randn(3, 5)})
    torch.testing.assert_close(std, torch.full_like(std, 0.05))
    torch.testing.assert_close(mean, vae.to_stats.bias[:4].expand(3, 4))


def test_temperature_scales_the_component_std_by_sqrt_tau():
    gen = torch.Generator().manual_seed(0)
    shape = (40_000, 1, 1)
    mixture = (torch.zeros(shape), torch.zeros(shape), torch.full(shape, math.log(0.3)))
    std = float(mdn_sample(mixture, 0.25, gen).std())
    assert std == pytest.approx(0.3 * 0.5, rel=0.03)


def test_temperature_divides_the_mixture_logits():
    gen = torch.Generator().manual_seed(0)
    shape = (40_000, 1, 2)
    mixture = (torch.tensor([1.0, 0.0]).expand(shape), torch.tensor([-1.0, 1.0]).expand(shape),
               torch.full(shape, math.log(1e-3)))
    share = float((mdn_sample(mixture, 0.5, gen) < 0).float().mean())
    assert share == pytest.approx(float(torch.softmax(torch.tensor([2.0, 0.0]), 0)[0]), abs=0.01)  # 0.881


def test_kl_is_floored_at_free_nats_times_z_dim():
    batch = random_batch({"proprio": (5,)}, 1, batch=3, length=6)
    torch.manual_seed(0)
    high = VMCWorldModel({"proprio": (5,)}, 1, kl_weight=0.5, kl_free=100.0, **VMC_TINY)
    _, metrics, _ = high.loss(batch)
    assert metrics["loss/kl"] == pytest.approx(0.5 * 100.0 * 4, rel=1e-6)  # floor 100 nats/dim · z_dim 4
    none = VMCWorldModel({"proprio": (5,)}, 1, kl_weight=1.0, kl_free=0.0, **VMC_TINY)
    _, metrics, _ = none.loss(batch)
    assert metrics["loss/kl"] == pytest.approx(metrics["kl/value"], rel=1e-5)


def test_mdn_term_skips_the_first_step_of_a_mid_episode_window():
    torch.manual_seed(0)
    model = VMCWorldModel({"proprio": (5,)}, 1, **VMC_TINY)
    batch = random_batch({"proprio": (5,)}, 1, batch=3, length=6)
    batch["is_first"][:] = False  # mid-episode windows
    batch["is_first"][1, 0] = True  # but the second one starts an episode
    _, metrics, post = model.loss(batch)
    with torch.no_grad():
        nll = -mdn_log_prob(model.rnn.mixture(post["h"]), post["z"])  # (3, 6)
    valid = torch.ones(3, 6)
    valid[[0, 2], 0] = 0
    assert metrics["loss/mdn"] == pytest.approx(float((nll * valid).sum() / valid.sum()), rel=1e-5)


def test_episode_start_zeroes_the_incoming_action():
    torch.manual_seed(0)
    model = VMCWorldModel({"proprio": (5,)}, 1, **VMC_TINY)
    obs, first = {"proprio": torch.randn(2, 5)}, torch.ones(2, dtype=torch.bool)
    a = model.step(model.initial(2), torch.ones(2, 1), obs, first)["h"]
    b = model.step(model.initial(2), torch.zeros(2, 1), obs, first)["h"]
    torch.testing.assert_close(a, b)
    # the same in observe's filtering
    seq = {"proprio": torch.randn(2, 3, 5)}
    is_first = torch.tensor([[True, False, False]] * 2)
    torch.manual_seed(1)
    p1, _ = model.observe(seq, torch.ones(2, 3, 1), is_first)
    actions = torch.ones(2, 3, 1)
    actions[:, 0] = -5.0
    torch.manual_seed(1)
    p2, _ = model.observe(seq, actions, is_first)
    torch.testing.assert_close(p1["h"], p2["h"])
