"""Shared nets: symlog/symexp, two-hot encoding, MLP zero-init."""

import torch

from wm_robotics.models.nets import TwoHot, adam, load_optimizer_state, mlp, symexp, symlog


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


def test_two_hot_round_trip():
    twohot = TwoHot(255)
    values = torch.cat([torch.linspace(-1000, 1000, 2001), torch.tensor([0.0, 0.5, -0.5, 3.3])])
    decoded = twohot.decode(twohot.encode(values).clamp_min(1e-30).log())
    torch.testing.assert_close(decoded, values, rtol=1e-4, atol=1e-4)


def test_two_hot_loss_is_smallest_at_the_target():
    twohot = TwoHot(255)
    value = torch.tensor([2.5])
    exact = twohot.encode(value).clamp_min(1e-30).log()
    assert twohot.loss(exact, value) < twohot.loss(torch.zeros(1, 255), value)


def test_mlp_zero_out_gives_zero_output():
    net = mlp(7, 16, 2, 3, zero_out=True)
    out = net(torch.randn(5, 7))
    assert out.shape == (5, 3)
    assert torch.count_nonzero(out) == 0


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
