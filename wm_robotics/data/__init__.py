"""Data: episode files on disk and sequence replay."""

from wm_robotics.data.episodes import EpisodeFormatError, EpisodeRecorder, list_episodes, load_episode, save_episode

__all__ = ["EpisodeFormatError", "EpisodeRecorder", "list_episodes", "load_episode", "save_episode"]
