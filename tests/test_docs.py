"""The README and the docs link to files and headings that exist, and their commands run with the current configs."""

import json
import re
import shlex
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.configs import ROOT
from wm_robotics.behaviors.planners import planner_settings_names
from wm_robotics.builders import build_world_model, obs_shapes
from wm_robotics.envs import env_kwargs, make_env

LINK = re.compile(r"\]\(([^)\s]+)\)")
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]  # the README and every doc


def anchors(markdown: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation but '-' and '_' dropped, spaces
    to '-'."""
    headings = re.findall(r"^#+ (.+)$", markdown.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def broken_links(markdown: Path) -> list[str]:
    """The relative links of ``markdown`` whose file, or heading in a Markdown file, does not exist."""
    broken = []
    for target in LINK.findall(markdown.read_text()):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked offline
            continue
        path, _, anchor = target.partition("#")
        file = (markdown.parent / path).resolve() if path else markdown
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    return broken


def test_anchors_are_githubs():
    assert {"goal-image-reacher-jepa_goal", "td-mpc2--jepa-presets", "two-commands"} <= anchors(ROOT / "README.md")


def test_readme_and_docs_links_resolve(tmp_path):
    (tmp_path / "a.md").write_text("# A b\n[ok](#a-b) [gone](#c) [file](a.md) [missing](b.png) [web](https://x.y)\n")
    assert broken_links(tmp_path / "a.md") == ["#c", "b.png"]
    found = {str(path.relative_to(ROOT)): broken_links(path)
             for path in MARKDOWN}
    assert {path: links for path, links in found.items() if links} == {}


def long_prose_lines(markdown: str, width: int = 120) -> list[int]:
    """Line numbers of prose lines wider than ``width``: tables, code blocks, images and lines that are one word
    (a long link) are exempt."""
    long, fenced = [], False
    for number, line in enumerate(markdown.splitlines(), 1):
        fenced ^= line.startswith("```")
        exempt = fenced or line.startswith(("|", "```")) or line.lstrip().startswith("![") or " " not in line.strip()
        if len(line) > width and not exempt:
            long.append(number)
    return long


def test_prose_fits_120_columns():
    assert long_prose_lines("a b\n" + "x " * 70 + "\n```\n" + "y " * 70 + "\n```\n|" + "z " * 70) == [2]
    found = {path.name: long_prose_lines(path.read_text())
             for path in [ROOT / "README.md", *sorted((ROOT / "docs" / "history").glob("*.md"))]}
    assert {name: lines for name, lines in found.items() if lines} == {}


HYDRA_SCRIPTS = ("train", "collect", "evaluate", "export_video")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`([^`]+)`")
SCRIPT_CALL = re.compile(r"scripts/({})\.py\b(.*)".format("|".join(HYDRA_SCRIPTS)))
PLACEHOLDER = re.compile(r"[<|{$]|\.\.\.|--")  # <run>, a|b, {2,5}, $s, elisions, argparse modes


def documented_calls(markdown: str) -> list[tuple[str, list[str]]]:
    """``(script, overrides)`` for each call of a Hydra script in ``markdown``'s code blocks and code spans (lines
    continued with a backslash joined); calls with placeholders are left out, ``hydra.*`` overrides dropped."""
    blocks = FENCE.findall(markdown)
    snippets = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    snippets += [span.replace("\\\n", " ").replace("\n", " ") for span in CODE_SPAN.findall(FENCE.sub("", markdown))]
    calls = []
    for command in (part for snippet in snippets for part in re.split(r"&&|;", snippet)):
        call = SCRIPT_CALL.search(command)
        if call and not PLACEHOLDER.search(call.group(2).split("#")[0]):
            words = shlex.split(call.group(2), comments=True)
            calls.append((call.group(1), [word for word in words if "=" in word and not word.startswith("hydra.")]))
    return calls


def test_documented_calls_found():
    markdown = ("```bash\npython3 scripts/train.py a=1 \\\n  b=2  # note\npython3 scripts/train.py resume=<run>\n```\n"
                "Run `python3 scripts/evaluate.py checkpoint=x\nepisodes=3 hydra.run.dir=y && ls`"
                " or `scripts/collect.py`.")
    assert documented_calls(markdown) == [("train", ["a=1", "b=2"]), ("evaluate", ["checkpoint=x", "episodes=3"]),
                                          ("collect", [])]


def test_documented_commands_compose_and_build():
    """Every command the README and docs give composes with the current configs, and each train command's world
    model (with its overrides) and MPC planner settings are accepted: a renamed option breaks this test, not a
    reader's run."""
    calls = [call for path in MARKDOWN for call in documented_calls(path.read_text())]
    assert sum(script == "train" for script, _ in calls) >= 20
    built, spaces = set(), {}
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        for script, overrides in calls:
            cfg = OmegaConf.to_container(compose(script, overrides=overrides), resolve=True)
            if script != "train" or cfg.get("resume"):
                continue
            behavior = cfg["behavior"]
            if behavior["kind"] == "mpc":
                assert set(behavior["settings"]) <= set(planner_settings_names(behavior["planner"])), overrides
            env = (cfg["env"]["id"], cfg["obs_mode"], cfg["env"]["image_size"])
            if env not in spaces:
                with make_env(env[0], **env_kwargs(cfg)) as made:
                    spaces[env] = (obs_shapes(made.observation_space), made.action_space.shape[0])
            key = json.dumps([cfg["model"], env], sort_keys=True)
            if key not in built:
                build_world_model(cfg["model"], *spaces[env])
                built.add(key)
