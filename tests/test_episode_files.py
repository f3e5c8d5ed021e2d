"""Episode files, more: too few observations refused, a truncated file named."""

import numpy as np
import pytest

from tests.test_episodes import _episode
from wm_robotics.data.episodes import EpisodeFormatError, load_episode, save_episode


def test_an_episode_missing_its_last_observation_is_refused(tmp_path):
    episode = _episode(pixels=False)
    episode["obs/proprio"] = episode["obs/proprio"][:-1]  # T entries, not T+1
    with pytest.raises(EpisodeFormatError, match=r"obs/proprio has 5 entries, expected 6 \(T\+1\)"):
        save_episode(tmp_path / "ep.npz", episode)
    np.savez(tmp_path / "short_obs.npz", **episode)
    with pytest.raises(EpisodeFormatError, match=r"short_obs\.npz: .*obs/proprio has 5 entries, expected 6"):
        load_episode(tmp_path / "short_obs.npz")


@pytest.mark.parametrize("key, shape", [("reward", (5, 1)), ("terminated", (5, 2))])
def test_a_reward_or_flag_array_of_more_than_one_value_per_step_is_refused_by_name(tmp_path, key, shape):
    episode = _episode(pixels=False)
    episode[key] = np.zeros(shape, episode[key].dtype)  # got through, then failed in the replay with numpy's words
    with pytest.raises(EpisodeFormatError, match=rf"\['{key}'\] must have shape \(T,\), one value per step"):
        save_episode(tmp_path / "ep.npz", episode)


def test_a_truncated_episode_file_is_named_in_the_error(tmp_path):
    data = save_episode(tmp_path / "good.npz", _episode()).read_bytes()
    for cut in (len(data) // 2, len(data) - 10):
        (tmp_path / "cut.npz").write_bytes(data[:cut])
        with pytest.raises(EpisodeFormatError, match=r"cut\.npz: not a readable episode file"):
            load_episode(tmp_path / "cut.npz")
