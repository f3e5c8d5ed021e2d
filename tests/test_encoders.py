"""The observation encoder's and decoder's conventions: pixels scaled to [-0.5, 0.5], shapes checked, and the
decoder's loss targets matching the reconstructions it shows."""

import pytest
import torch

from wm_robotics.models.encoders import ObservationDecoder, _image_batch, check_obs_shapes
from wm_robotics.models.nets import symlog


def test_pixels_enter_the_encoder_centred_on_zero():
    pixels = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
    pixels[1] = 255
    batch = _image_batch(pixels)
    assert batch.shape == (2, 3, 64, 64)
    assert (batch[0] == -0.5).all() and (batch[1] == 0.5).all()


@pytest.mark.parametrize("shape", [(64, 32, 3), (32, 64, 3), (64, 64)])
def test_pixels_must_be_64_by_64_images(shape):
    with pytest.raises(ValueError, match="pixels must be 64x64xC"):
        check_obs_shapes({"pixels": shape})


def test_a_prediction_with_zero_loss_reconstructs_the_observation(monkeypatch):
    decoder = ObservationDecoder(8, {"pixels": (64, 64, 3), "proprio": (4,)}, cnn_depth=4, mlp_units=16)
    obs = {"pixels": torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8),
           "proprio": torch.tensor([[-20.0, -1.0, 0.5, 3.0], [0.0, 2.0, -0.1, 100.0]])}
    exact = {"pixels": obs["pixels"].float() / 255 - 0.5, "proprio": symlog(obs["proprio"])}  # in their loss spaces
    monkeypatch.setattr(decoder, "_predict", lambda features, keys=None: {key: value.clone()
                                                                          for key, value in exact.items()})
    losses = decoder.loss(torch.zeros(2, 8), obs)
    assert losses["pixels"].abs().max() < 1e-9 and losses["proprio"].abs().max() < 1e-9
    shown = decoder(torch.zeros(2, 8))
    torch.testing.assert_close(shown["pixels"], obs["pixels"].float() / 255)
    torch.testing.assert_close(shown["proprio"], obs["proprio"])
