"""Shared nets: symlog/symexp, two-hot encoding, MLP zero-init and input bias."""

import pytest
import torch

from wm_robotics import precision
from wm_robotics.models.ensemble import EnsembleMLP
from wm_robotics.models.nets import (
    OutputLinear,
    TwoHot,
    adam,
    load_optimizer_state,
    mlp,
    parameter_groups,
    symexp,
    symlog,
)
from wm_robotics.precision import compute_precision, float32_output_layers


def test_symexp_inverts_symlog():
    x = torch.cat([torch.linspace(-1e4, 1e4, 1001, dtype=torch.float64), torch.tensor([0.0, 1e-6, -1e-6],
                                                                                         dtype=torch.float64)])
    torch.testing.assert_close(symexp(symlog(x)), x)
    assert symlog(torch.tensor(0.0)) == 0.0


def test_two_hot_weights_sum_to_one_on_two_neighbouring_bins():
    twohot = TwoHot(255)
    target = twohot.encode(torch.linspace(-1000, 1000, 501))
    assert target.shape == (501, 255)
    torch.testing.assert_close(target.sum(-1), torch.ones(501))
    assert ((target > 0).sum(-1) <= 2).all() and (target >= 0).all()
    beyond = twohot.encode(torch.tensor([-1e10, 1e10]))  # past the outer bins: all mass on the end bin
    assert beyond[0, 0] == 1 and beyond[1, -1] == 1 and beyond.sum() == 2


def test_adam_eps_defaults_to_1e_8_and_is_honoured():
    weight = torch.nn.Parameter(torch.zeros(2))
    assert adam([weight], 1e-3).param_groups[0]["eps"] == 1e-8
    assert adam([weight], 1e-3, eps=1e-5).param_groups[0]["eps"] == 1e-5


def test_two_hot_round_trip():
    twohot = TwoHot(255)
    values = torch.cat([torch.linspace(-1000, 1000, 2001), torch.tensor([0.0, 0.5, -0.5, 3.3])])
    decoded = twohot.decode(twohot.encode(values).clamp_min(1e-30).log())
    torch.testing.assert_close(decoded, values, rtol=1e-4, atol=1e-4)


def test_two_hot_loss_is_smallest_at_the_target():
    twohot = TwoHot(255)
    value = torch.tensor([2.5])
    exact = twohot.encode(value).clamp_min(1e-30).log()
    others = [twohot.encode(value + delta).clamp_min(1e-30).log() for delta in (-0.5, -0.05, 0.05, 0.5)]
    assert all(twohot.loss(exact, value) < twohot.loss(logits, value) for logits in [torch.zeros(1, 255), *others])


def test_two_hot_loss_is_the_cross_entropy_against_the_encoded_target():
    torch.manual_seed(0)
    twohot = TwoHot(255)
    logits = torch.randn(4, 6, 255, requires_grad=True)
    value = torch.randn(4, 6) * 50
    dense = -(twohot.encode(value) * torch.log_softmax(logits, -1)).sum(-1)
    torch.testing.assert_close(twohot.loss(logits, value), dense)
    (grad,) = torch.autograd.grad(twohot.loss(logits, value).sum(), logits)
    torch.testing.assert_close(grad, torch.softmax(logits, -1).detach() - twohot.encode(value))


def test_two_hot_loss_sums_scaled_targets_over_one_log_softmax():
    torch.manual_seed(0)
    twohot = TwoHot(255)
    logits = torch.randn(4, 6, 255, requires_grad=True)
    first, second = torch.randn(4, 6) * 5, torch.randn(4, 6) * 5
    both = twohot.loss(logits, first, second, scales=(1.0, 0.3))
    torch.testing.assert_close(both, twohot.loss(logits, first) + 0.3 * twohot.loss(logits, second))
    (grad,) = torch.autograd.grad(both.sum(), logits)
    target = twohot.encode(first) + 0.3 * twohot.encode(second)
    torch.testing.assert_close(grad, 1.3 * torch.softmax(logits, -1).detach() - target)
    with pytest.raises(ValueError, match="one scale per target"):
        twohot.loss(logits, first, second, scales=(1.0,))


def test_mlp_zero_out_gives_zero_output():
    net = mlp(7, 16, 2, 3, zero_out=True)
    out = net(torch.randn(5, 7))
    assert out.shape == (5, 3)
    assert torch.count_nonzero(out) == 0


def test_mlp_sees_the_scale_of_its_input():
    # LayerNorm after a bias-free first layer maps x and 2x to the same output; the input bias keeps them apart
    torch.manual_seed(0)
    net = mlp(6, 32, 2, 4)
    x = torch.randn(8, 6)
    assert (net(x) - net(2 * x)).abs().max() > 1e-2


def test_mlp_saved_without_an_input_bias_loads_with_a_zero_bias():
    torch.manual_seed(0)
    net = mlp(6, 32, 2, 4)
    old = {key: value for key, value in net.state_dict().items() if key != "0.bias"}  # as saved before the bias
    net.load_state_dict(old)
    assert torch.count_nonzero(net[0].bias) == 0
    x = torch.randn(8, 6)
    expected = net[1:](torch.nn.functional.linear(x, old["0.weight"]))
    torch.testing.assert_close(net(x), expected)
    trained = mlp(6, 32, 2, 4)
    bias = trained[0].bias.detach().clone()
    later = {key: value for key, value in net.state_dict().items() if not key.startswith("0.")}
    missing = trained.load_state_dict(later, strict=False).missing_keys  # a partial load leaves layer 0 as it was
    assert missing == ["0.weight", "0.bias"] and torch.equal(trained[0].bias, bias)


def test_optimizer_state_of_another_model_version_says_so():
    net = mlp(6, 8, 2, 3)
    without_bias = adam([p for name, p in net.named_parameters() if name != "0.bias"], 1e-3).state_dict()
    with pytest.raises(ValueError, match="another model version"):
        load_optimizer_state(adam(net.parameters(), 1e-3), without_bias)


def test_optimizer_state_from_a_plain_adam_keeps_fusing_and_the_moments():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    plain = torch.optim.Adam(net.parameters(), lr=1e-3)  # as checkpoints saved before adam() was fused
    net(torch.randn(4, 3)).sum().backward()
    plain.step()
    fused = adam(net.parameters(), 1e-3)
    load_optimizer_state(fused, plain.state_dict())
    assert fused.param_groups[0]["fused"] is True
    torch.testing.assert_close(fused.state[net.weight]["exp_avg"], plain.state[net.weight]["exp_avg"])
    before = net.weight.detach().clone()
    fused.step()  # the gradient is still there: a fused step from the loaded moments
    assert int(fused.state[net.weight]["step"]) == 2 and not torch.equal(before, net.weight)


def test_a_loaded_optimizer_state_keeps_the_learning_rates_the_optimizer_was_built_with():
    # a run resumed with a new lr (or encoder_lr_scale) trains at it: torch would restore the saved rates
    torch.manual_seed(0)
    net = torch.nn.Sequential()
    net.encoder, net.head = torch.nn.Linear(3, 4), torch.nn.Linear(4, 1)
    saved = adam(parameter_groups(net, 1e-3, 0.3), 1e-3)
    net(torch.randn(5, 3)).sum().backward()
    saved.step()
    resumed = adam(parameter_groups(net, 5e-4, 0.5), 5e-4)
    load_optimizer_state(resumed, saved.state_dict())
    assert [group["lr"] for group in resumed.param_groups] == [2.5e-4, 5e-4]
    for param in net.parameters():
        torch.testing.assert_close(resumed.state[param]["exp_avg_sq"], saved.state[param]["exp_avg_sq"])
    with pytest.raises(ValueError, match="has 2 parameter groups, this optimiser 1: a run's model.encoder_lr_scale"):
        load_optimizer_state(adam(parameter_groups(net, 1e-3, 1.0), 1e-3), saved.state_dict())


def test_outputs_stay_float32_under_bf16_autocast():
    from wm_robotics.models.ensemble import EnsembleMLP

    torch.manual_seed(0)
    net, ensemble = mlp(6, 32, 2, 4), EnsembleMLP(3, 6, 32, 2, 4)
    seen = []
    net[3].register_forward_hook(lambda module, args, out: seen.append(out.dtype))  # the second hidden Linear
    x = torch.randn(5, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, q = net(x), ensemble(x)
    assert seen == [torch.bfloat16]  # the hidden layers ran in bf16 ...
    assert out.dtype == q.dtype == torch.float32  # ... the outputs did not
    torch.testing.assert_close(out, net(x), atol=0.05, rtol=0.05)


def test_bf16_full_runs_output_layers_in_bf16_with_float32_results():
    from wm_robotics.models.ensemble import EnsembleMLP

    torch.manual_seed(0)
    layer, ensemble = OutputLinear(6, 4), EnsembleMLP(3, 6, 8, 1, 4)
    torch.nn.init.normal_(ensemble.out_weight.data)  # zero-initialised: nothing to round
    x = torch.randn(5, 6).bfloat16().float()  # exactly representable in bf16: the input casts are exact
    weight, bias = layer.weight.bfloat16(), layer.bias.bfloat16()
    in_bf16 = torch.nn.functional.linear(x.bfloat16(), weight, bias).float()
    in_float32 = torch.nn.functional.linear(x, layer.weight, layer.bias)
    with compute_precision(torch.device("cpu"), "bf16_full"):
        full, q_full = layer(x), ensemble(x)
        assert not float32_output_layers()
    with compute_precision(torch.device("cpu"), "bf16"):
        kept, q_kept = layer(x), ensemble(x)
        assert float32_output_layers()
    assert float32_output_layers()  # restored on exit
    reused = compute_precision(torch.device("cpu"), "bf16_full")
    with reused:
        with reused:  # nested entries of one context: each restores what it found
            assert torch.is_autocast_enabled("cpu")
        assert torch.is_autocast_enabled("cpu") and not float32_output_layers()
    assert not torch.is_autocast_enabled("cpu") and float32_output_layers()
    assert full.dtype == kept.dtype == q_full.dtype == q_kept.dtype == torch.float32
    assert torch.equal(full, in_bf16) and torch.equal(kept, in_float32)
    assert not torch.equal(q_full, q_kept)  # the ensemble's output layer follows the same policy
    torch.testing.assert_close(q_full, q_kept, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_warns_only_on_a_cpu_without_bf16_kernels(monkeypatch, native):
    import warnings

    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with compute_precision(torch.device("cpu"), "fp32"):
            pass
        with compute_precision(torch.device("cpu"), "bf16"):
            assert torch.is_autocast_enabled("cpu")  # it still runs in bf16: the warning only says what it costs
    messages = [str(w.message) for w in caught]
    assert len(messages) == (0 if native else 1)  # fp32 never warns
    assert native or ("precision='bf16'" in messages[0] and "use precision='fp32'" in messages[0])


@pytest.mark.parametrize("cpu_kernels", [True, False])
def test_cuda_has_bf16_kernels_whatever_the_cpu_has(monkeypatch, cpu_kernels):
    monkeypatch.setattr(precision, "_cpu_bf16_kernels", lambda: cpu_kernels)
    assert precision.native_bf16(torch.device("cuda")) is True
    assert precision.native_bf16(torch.device("cpu")) is cpu_kernels


def test_encoder_lr_scale_needs_an_encoder_and_a_scale_of_at_least_zero():
    with pytest.raises(ValueError, match="Linear has none"):
        parameter_groups(torch.nn.Linear(2, 2), 1e-3, 0.3)
    with pytest.raises(ValueError, match=">= 0"):
        parameter_groups(torch.nn.Linear(2, 2), 1e-3, -1.0)


def test_two_hot_defaults_to_255_buckets_from_minus_20_to_20_in_symlog_space():
    buckets = TwoHot().buckets
    assert buckets.shape == (255,) and buckets[0] == -20 and buckets[-1] == 20
    torch.testing.assert_close(buckets[1:] - buckets[:-1], torch.full((254,), 40 / 254))
    with pytest.raises(ValueError, match="bins must be at least 2, got 1"):
        TwoHot(1)


def test_ensemble_initialises_each_layer_as_nn_linear_at_its_fan_in():
    torch.manual_seed(0)
    net = EnsembleMLP(8, 4, 64, 2, 3, bias=True)
    for weights, fan_in in ((net.first, 4), (net.deep[0], 64), (net.hidden_bias[0], 4), (net.hidden_bias[1], 64)):
        bound = fan_in ** -0.5
        assert 0.9 * bound < weights.abs().max() <= bound, fan_in
    assert not net.out_weight.any() and not net.out_bias.any()  # early Q values are 0
    with pytest.raises(ValueError, match="layers >= 1"):
        EnsembleMLP(2, 4, 64, 0, 3)


def test_ensemble_members_subset_uses_each_members_own_norm_and_output_parameters():
    torch.manual_seed(0)
    net = EnsembleMLP(4, 7, 16, 2, 3, bias=True)
    for param in net.parameters():
        torch.nn.init.normal_(param)  # every member's LayerNorm affine and output bias its own
    x = torch.randn(5, 7)
    torch.testing.assert_close(net(x, torch.tensor([2, 0])), net(x)[[2, 0]])
