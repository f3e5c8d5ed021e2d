"""JEPA world model: the rollout loss learns, anti-collapse terms work, imagination and heads behave."""

from __future__ import annotations

import pytest
import torch

from wm_robotics.behaviors.cem import CEMPlanner
from wm_robotics.behaviors.planning import GoalObjective, goal_embedding
from wm_robotics.models.encoders import ObservationDecoder
from wm_robotics.models.ensemble import EnsembleMLP
from wm_robotics.models.jepa import JEPAWorldModel
from wm_robotics.models.latent_encoder import SimNorm
from wm_robotics.precision import compute_precision
from wm_robotics.wm_metrics import latent_diagnostics

pytestmark = pytest.mark.usefixtures("one_torch_thread")
OBS, ACTIONS = 6, 2


def linear_system(batch: int, steps: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Sequences of x' = x + 0.3·[a, −a, a] with reward −|x|² (Dreamer batch convention)."""
    x = torch.randn(batch, OBS, generator=generator)
    actions = torch.rand(batch, steps, ACTIONS, generator=generator) * 2 - 1
    xs = [x]
    for t in range(1, steps):
        x = x + 0.3 * torch.cat([actions[:, t], -actions[:, t], actions[:, t]], -1)
        xs.append(x)
    obs = torch.stack(xs, 1)
    return {"obs/proprio": obs, "action": actions, "reward": -obs.square().sum(-1) / OBS,
            "is_first": torch.zeros(batch, steps, dtype=torch.bool),
            "is_terminal": torch.zeros(batch, steps, dtype=torch.bool)}


def small(**kw) -> JEPAWorldModel:
    kw = {"latent": 16, "units": 32, "enc_units": 32, "layers": 1, "reward": False, "num_q": 0, "policy": False,
          **kw}
    return JEPAWorldModel({"proprio": (OBS,)}, ACTIONS, **kw)


def train(model: JEPAWorldModel, steps: int, lr: float, seq_len: int = 4,
          precision: str = "fp32") -> list[dict[str, float]]:
    optimizer = torch.optim.Adam(model.parameters(), lr)
    generator = torch.Generator().manual_seed(0)
    history = []
    for _ in range(steps):
        with compute_precision(torch.device("cpu"), precision):
            loss, metrics, states = model.loss(linear_system(64, seq_len, generator))
        assert loss.dtype == model.features(states).dtype == torch.float32
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.after_step()
        history.append(metrics)
    return history


def diagnostics(model: JEPAWorldModel) -> dict:
    batch = linear_system(256, 4, torch.Generator().manual_seed(1))
    post, _ = model.observe({"proprio": batch["obs/proprio"]}, batch["action"], batch["is_first"])
    return latent_diagnostics(model.features(post))


@pytest.mark.parametrize("precision, extra", [("fp32", {}), ("bf16", {}), ("fp32", {"latent_layernorm": True}),
                                             ("fp32", {"q_bias": True})])
def test_loss_falls_with_every_head_on(precision, extra):
    torch.manual_seed(0)
    model = small(reward=True, num_q=3, policy=True, probe_decoder=True, target="stopgrad", **extra)
    history = train(model, 60, 3e-3, precision=precision)
    for name in ("loss/total", "loss/reward", "loss/value", "loss/probe"):
        assert history[-1][name] < 0.7 * history[0][name], name


@pytest.mark.parametrize("settings, collapses", [
    (dict(target="online"), True),                                   # neither EMA nor VICReg
    (dict(target="ema"), False),
    (dict(target="online", vicreg_var=1.0, vicreg_cov=0.04, simnorm=False), False),
])
def test_collapse_diagnostic_detects_collapse_only_without_anti_collapse_term(settings, collapses):
    torch.manual_seed(0)
    model = small(**settings)
    train(model, 500, 1e-2)
    diag = diagnostics(model)
    assert diag["collapsed"] is collapses, diag


def test_vicreg_on_simnorm_latents_is_refused():
    with pytest.raises(ValueError, match=r"VICReg's terms need simnorm=false: SimNorm dims lie in \[0, 1\]"):
        small(target="online", vicreg_var=1.0)


def test_imagine_matches_a_step_loop_and_runs_under_a_policy():
    torch.manual_seed(0)
    model = small(policy=True)
    start = {"latent": torch.randn(5, 16).softmax(-1)}
    actions = torch.rand(5, 4, ACTIONS) * 2 - 1
    states, used = model.imagine(start, 4, actions=actions)
    latent = start["latent"]
    for t in range(4):
        latent = model.next(latent, actions[:, t])
        torch.testing.assert_close(states["latent"][:, t], latent)
    assert torch.equal(used, actions)
    states, used = model.imagine(start, 3, policy=lambda z: model.pi(z)[0])
    assert states["latent"].shape == (5, 3, 16) and used.shape == (5, 3, ACTIONS) and used.abs().max() <= 1


def test_ensemble_members_subset_equals_full_ensemble_rows():
    torch.manual_seed(0)
    net = EnsembleMLP(5, 7, 16, 2, 3)
    torch.nn.init.normal_(net.out_weight)
    x = torch.randn(4, 2, 7)
    full = net(x)
    assert full.shape == (5, 4, 2, 3)
    torch.testing.assert_close(net(x, torch.tensor([3, 1])), full[[3, 1]])


@pytest.mark.parametrize("bias", [False, True])
def test_ensemble_member_equals_its_plain_mlp(bias):
    torch.manual_seed(0)
    net = EnsembleMLP(3, 7, 16, 2, 5, bias=bias)
    for param in net.parameters():
        torch.nn.init.normal_(param)
    x = torch.randn(4, 7)
    for m in range(3):
        h = x @ net.first.view(7, 3, 16)[:, m]
        for layer in range(2):
            h = h if layer == 0 else h @ net.deep[layer - 1][m]
            h = h + net.hidden_bias[layer, m, 0] if bias else h
            h = torch.nn.functional.silu(torch.nn.functional.layer_norm(h, (16,)) * net.norm_weight[layer, m, 0]
                                         + net.norm_bias[layer, m, 0])
        torch.testing.assert_close(net(x)[m], h @ net.out_weight[m] + net.out_bias[m])


def test_q_bias_lets_the_q_heads_see_the_scale_of_their_input():
    torch.manual_seed(0)
    x = torch.randn(6, 7)
    for bias in (False, True):
        net = EnsembleMLP(2, 7, 32, 2, 3, bias=bias)
        torch.nn.init.normal_(net.out_weight)
        scaled = net(3 * x)
        assert torch.allclose(net(x), scaled, atol=1e-4) != bias  # bias-free: LN(W·3x) = LN(W·x)
        torch.testing.assert_close(net(3 * x, torch.tensor([1])), scaled[[1]])  # a member's own bias
    keys = [set(small(num_q=2, policy=True, q_bias=on).state_dict()) for on in (False, True)]
    assert keys[1] - keys[0] == {"q.hidden_bias", "target_q.hidden_bias"}  # off: the old layout, old checkpoints load


def test_q_dropout_acts_only_where_gradients_are_recorded():
    torch.manual_seed(0)
    plain, dropped = EnsembleMLP(2, 7, 64, 2, 3), EnsembleMLP(2, 7, 64, 2, 3, dropout=0.5)
    torch.nn.init.normal_(plain.out_weight)
    dropped.load_state_dict(plain.state_dict())  # dropout adds no parameters: old checkpoints load
    x = torch.randn(32, 7)
    with torch.no_grad():  # TD targets
        torch.testing.assert_close(dropped(x), plain(x))
    with torch.inference_mode():  # planning
        torch.testing.assert_close(dropped(x), plain(x))
    first, second = dropped(x), dropped(x)  # a loss: a fresh mask each call
    assert first.requires_grad and not torch.allclose(first, second)
    with pytest.raises(ValueError, match="dropout"):
        EnsembleMLP(2, 7, 64, 2, 3, dropout=1.0)


def test_simnorm_is_a_softmax_over_consecutive_groups_of_8():
    x = torch.randn(3, 5, 32) * 4
    torch.testing.assert_close(SimNorm()(x), torch.softmax(x.view(3, 5, 4, 8), -1).view(3, 5, 32))


def test_latent_layernorm_keeps_the_simnorm_inputs_at_a_fixed_scale():
    torch.manual_seed(0)
    obs, action = {"proprio": torch.randn(5, OBS)}, torch.rand(5, ACTIONS) * 2 - 1
    for normed in (False, True):
        model = small(latent_layernorm=normed)
        before = model.encoder(obs), model.img_step({"latent": model.encoder(obs)}, action)["latent"]
        with torch.no_grad():  # the last linear layers' outputs 20x larger
            for layer in (model.encoder.proj, model.dynamics[0][-1]):
                layer.weight.mul_(20)
                layer.bias.mul_(20)
        after = model.encoder(obs), model.img_step({"latent": before[0]}, action)["latent"]
        for old, new in zip(before, after):  # with the LayerNorm: the same latent; without: a sharper softmax
            assert torch.allclose(old, new, atol=1e-4) == normed
    assert not any("norm" in key for key in small().state_dict())  # off: the old layout, old checkpoints load
    with pytest.raises(ValueError, match="split_latent"):
        JEPAWorldModel({"pixels": (64, 64, 3), "proprio": (OBS,)}, ACTIONS, latent=16, units=32, enc_units=32,
                       cnn_depth=4, reward=False, num_q=0, policy=False, split_latent=True, latent_layernorm=True)


def test_probe_decoder_does_not_train_the_encoder():
    torch.manual_seed(0)
    model = small(probe_decoder=True)
    model.coefs["loss/consistency"] = 0.0
    loss, _, _ = model.loss(linear_system(8, 4, torch.Generator().manual_seed(0)))
    loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.encoder.parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.decoder.parameters())


def test_split_latent_gives_pixels_and_proprio_their_own_half():
    torch.manual_seed(0)
    model = JEPAWorldModel({"pixels": (64, 64, 3), "proprio": (OBS,)}, ACTIONS, latent=16, units=32, enc_units=32,
                           cnn_depth=4, reward=False, num_q=0, policy=False, simnorm=False, split_latent=True)
    pixels = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    proprio = torch.randn(2, OBS)
    base = model.encoder({"pixels": pixels, "proprio": proprio})
    new_pixels = model.encoder({"pixels": 255 - pixels, "proprio": proprio})
    new_proprio = model.encoder({"pixels": pixels, "proprio": proprio + 1})
    torch.testing.assert_close(new_pixels[:, 8:], base[:, 8:])  # the proprio half ignores the frame
    torch.testing.assert_close(new_proprio[:, :8], base[:, :8])  # the pixel half ignores the proprio
    assert not torch.allclose(new_pixels[:, :8], base[:, :8]) and not torch.allclose(new_proprio[:, 8:], base[:, 8:])
    assert model.encoder.block("proprio") == slice(8, 16)
    for key, block in (("pixels", slice(0, 8)), ("proprio", slice(8, 16))):  # each block from its key alone
        torch.testing.assert_close(model.encoder.block_latent(key, {"pixels": pixels, "proprio": proprio}),
                                   base[:, block])
    with pytest.raises(ValueError, match=r"unknown observation key 'depth'; "
                                         r"this encoder's keys: \['pixels', 'proprio'\]"):
        model.encoder.block("depth")
    with pytest.raises(ValueError, match="splits evenly"):
        JEPAWorldModel({"pixels": (64, 64, 3), "proprio": (OBS,)}, ACTIONS, latent=15, simnorm=False,
                       split_latent=True)
    with pytest.raises(ValueError, match="splits evenly"):  # halves of 12: not whole SimNorm groups of 8
        JEPAWorldModel({"pixels": (64, 64, 3), "proprio": (OBS,)}, ACTIONS, latent=24, simnorm=True,
                       split_latent=True)


def test_split_dynamics_predicts_the_proprio_block_from_itself_and_the_action():
    torch.manual_seed(0)
    model = JEPAWorldModel({"pixels": (64, 64, 3), "proprio": (OBS,)}, ACTIONS, latent=16, units=32, enc_units=32,
                           cnn_depth=4, reward=False, num_q=0, policy=False, simnorm=True, split_latent=True,
                           split_dynamics=True, probe_decoder=True)
    latent, action = torch.randn(3, 16), torch.randn(3, ACTIONS)
    base = model.next(latent, action)
    other_pixels = latent.clone()
    other_pixels[:, :8] += 1.0  # the pixel block (keys are ordered pixels, proprio)
    moved = model.next(other_pixels, action)
    torch.testing.assert_close(moved[:, 8:], base[:, 8:])  # the proprio block's prediction ignores the pixels
    assert not torch.allclose(moved[:, :8], base[:, :8])  # the pixel block's prediction reads everything
    other_proprio = latent.clone()
    other_proprio[:, 8:] += 1.0
    assert not torch.allclose(model.next(other_proprio, action)[:, :8], base[:, :8])
    assert not torch.allclose(model.next(latent, action + 1.0)[:, 8:], base[:, 8:])
    torch.testing.assert_close(base.unflatten(-1, (-1, 8)).sum(-1), torch.ones(3, 2))  # SimNorm per group of 8
    # the pixel block's prediction loss does not train the proprio block (nor its encoder)
    tracked = latent.clone().requires_grad_()
    model.next(tracked, action, detach_block=True)[:, :8].square().sum().backward()
    assert not tracked.grad[:, 8:].any() and tracked.grad[:, :8].any()
    tracked.grad = None  # imagination outside the loss (an actor's backprop) keeps that path
    model.img_step({"latent": tracked}, action)["latent"][:, :8].square().sum().backward()
    assert tracked.grad[:, 8:].any()
    # the probe decodes proprio from the proprio block alone, pixels from the whole latent
    decoded, decoded_moved = model.decode({"latent": latent}), model.decode({"latent": other_pixels})
    assert set(decoded) == {"pixels", "proprio"} and decoded["proprio"].shape == (3, OBS)
    torch.testing.assert_close(decoded_moved["proprio"], decoded["proprio"])
    assert not torch.allclose(model.decode({"latent": other_proprio})["proprio"], decoded["proprio"])
    assert set(model.decode({"latent": latent}, ["proprio"])) == {"proprio"}
    with pytest.raises(ValueError, match="split_dynamics needs split_latent=true"):
        JEPAWorldModel({"pixels": (64, 64, 3), "proprio": (OBS,)}, ACTIONS, latent=16, split_dynamics=True)
    one_key = JEPAWorldModel({"proprio": (OBS,)}, ACTIONS, latent=16, split_latent=True, split_dynamics=True)
    assert one_key.proprio_block is None and one_key.proprio_dynamics is None  # one key: nothing to split


def test_proprio_view_plans_as_the_full_model_without_the_pixel_predictor():
    torch.manual_seed(0)
    model = JEPAWorldModel({"pixels": (64, 64, 3), "proprio": (OBS,)}, ACTIONS, latent=16, units=32, enc_units=32,
                           cnn_depth=4, reward=False, num_q=0, policy=False, simnorm=False, split_latent=True,
                           split_dynamics=True, probe_decoder=True)
    view = model.proprio_view()
    state = {"latent": torch.randn(2, 16)}
    actions = torch.rand(2, 5, ACTIONS) * 2 - 1
    full, _ = model.imagine(state, 5, actions)
    alone, _ = view.imagine(view.restrict(state), 5, actions)
    assert view.feature_dim == view.features(alone).shape[-1] == 8
    torch.testing.assert_close(alone["latent"], full["latent"][..., 8:])
    torch.testing.assert_close(view.decode(alone)["proprio"], model.decode(full, ["proprio"])["proprio"])
    index = torch.tensor([0, 1])
    goal = goal_embedding(model, {"latent": torch.randn(1, 16)}, index)[0]
    plans = []
    for planning_model, start in ((model, state), (view, view.restrict(state))):
        torch.manual_seed(1)
        planner = CEMPlanner(ACTIONS, horizon=4, iterations=3, candidates=32, elites=4,
                             objective=GoalObjective(goal, proprio_index=index))
        plans.append(planner.plan(planning_model, start))
    torch.testing.assert_close(plans[1], plans[0])
    assert small().proprio_view() is None  # nothing to split


def test_split_dynamics_checkpoint_with_a_whole_latent_probe_still_loads():
    shapes = {"pixels": (64, 64, 3), "proprio": (OBS,)}
    kwargs = dict(latent=16, units=32, enc_units=32, cnn_depth=4, reward=False, num_q=0, policy=False,
                  simnorm=False, split_latent=True, split_dynamics=True, probe_decoder=True)
    old = JEPAWorldModel(shapes, ACTIONS, **kwargs)
    old.decoder = ObservationDecoder(16, shapes, 4, 32, 1)  # session 8's layout: the probe reads the whole latent
    model = JEPAWorldModel(shapes, ACTIONS, **kwargs)
    model.load_state_dict(old.state_dict())
    state = {"latent": torch.randn(2, 16)}
    torch.testing.assert_close(model.decode(state)["proprio"], old.decode(state)["proprio"])
    assert model.proprio_view() is None  # its proprio is not read from the block alone: plan with the whole model
    JEPAWorldModel(shapes, ACTIONS, **kwargs).load_state_dict(JEPAWorldModel(shapes, ACTIONS, **kwargs).state_dict())


def test_bad_settings_say_what_is_wrong():
    with pytest.raises(ValueError, match="needs policy=true"):
        small(num_q=2, policy=False)
    with pytest.raises(ValueError, match="target must be one of"):
        small(target="momentum")
    with pytest.raises(ValueError, match="seq_len must be at least horizon \\+ 1 = 4"):
        small().loss(linear_system(2, 3, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("terminal", [True, False])
def test_loss_terms_match_a_hand_rollout(terminal):
    torch.manual_seed(0)
    model = small(num_q=2, policy=True, target="stopgrad", horizon=3, rho=0.5)
    with torch.no_grad():
        for net in (model.q, model.target_q):
            torch.nn.init.normal_(net.out_weight, std=0.3)  # non-zero Q values: zero heads hide the TD term
    batch = linear_system(2, 6, torch.Generator().manual_seed(0))
    batch["is_terminal"][:] = terminal
    with torch.no_grad():
        _, metrics, _ = model.loss(batch)
        obs, action, reward = batch["obs/proprio"], batch["action"], batch["reward"]
        z = model.encoder({"proprio": obs})  # (B, T, L)
        horizon, starts = 3, 6 - 3
        consistency, value = 0.0, 0.0
        for k in range(horizon):
            cons_k, val_k = [], []
            for b in range(2):
                for s in range(starts):
                    latent = z[b, s]
                    for j in range(k + 1):  # step j: action s+j+1 leads to observation s+j+1
                        before, latent = latent, model.next(latent, action[b, s + j + 1])
                    cons_k.append((latent - z[b, s + k + 1]).square().mean())
                    if terminal:  # td = reward only: the bootstrap is cut by the terminal flag
                        logits = model.q(torch.cat([before, action[b, s + k + 1]], -1))  # (num_q, bins)
                        val_k.append(model.twohot.loss(logits, reward[b, s + k + 1].expand(2)).mean())
            consistency += 0.5 ** k * torch.stack(cons_k).mean() / horizon
            if terminal:
                value += 0.5 ** k * torch.stack(val_k).mean() / horizon
    assert metrics["loss/consistency"] == pytest.approx(consistency.item(), rel=1e-4)
    reward_mean = reward[:, 1:][:, torch.arange(starts)[:, None] + torch.arange(horizon)].mean().item()
    if terminal:
        assert metrics["loss/value"] == pytest.approx(value.item(), rel=1e-4)
        assert metrics["value/td_target"] == pytest.approx(reward_mean, rel=1e-4)
    else:
        assert metrics["value/td_target"] != pytest.approx(reward_mean, rel=1e-2)
