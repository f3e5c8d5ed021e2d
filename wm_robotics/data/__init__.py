"""Data: episode files on disk and sequence replay."""

from wm_robotics.data.episodes import EpisodeFormatError, EpisodeRecorder, list_episodes, load_episode, save_episode
from wm_robotics.data.replay import SequenceReplay, to_torch

__all__ = [
    "EpisodeFormatError",
    "EpisodeRecorder",
    "SequenceReplay",
    "list_episodes",
    "load_episode",
    "save_episode",
    "to_torch",
]
