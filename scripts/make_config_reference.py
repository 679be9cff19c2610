"""Write docs/configuration-reference.md from conf/: every key, its default and its meaning.

The keys and defaults come from composing the real entry configs with Hydra's compose API (so the
reference shows what a run gets, defaults lists and overrides included); the meaning of each key is
the comment next to it in conf/ (on the key's line, or the comment block just above it). A key
without a comment is a problem: the script names it and exits with 1, and
tests/test_config_reference.py fails on it, so every key stays described.

    python scripts/make_config_reference.py            # rewrite docs/configuration-reference.md
    python scripts/make_config_reference.py --check    # exit 1 if the file is out of date

It imports nothing of src/: composing a config does not instantiate it, and interpolations
(`${seed}`, `${paths.data_dir}`) are shown as written, unresolved.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF = PROJECT_ROOT / "conf"
OUTPUT = PROJECT_ROOT / "docs" / "configuration-reference.md"
REGENERATE = "make config-reference"

# Hydra's own keys of a node: shown as part of the node, not as keys a user sets.
META_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}

# The entry points, in the order the reference lists them: (config name, command).
ENTRIES = [
    ("train", "python -m src.train"),
    ("evaluate", "python -m src.evaluate"),
    ("predict", "python -m src.predict"),
    ("export", "python -m src.export"),
    ("serve", "python -m src.serve"),
    ("inspect", "python -m src.inspect"),
    ("lr_find", "python -m src.lr_find"),
    ("prepare", "python -m src.prepare"),
    ("bench", "python -m src.bench"),
]

# Config groups and the entry config whose composition shows what each option changes.
GROUP_ENTRY = {"backend": "serve", "bench": "bench"}
# Groups whose default is a list of options: an option is shown added to the default, as used.
LIST_GROUPS = {"callbacks"}


# --------------------------------------------------------------------------------------------
# Comments next to keys in the YAML files
# --------------------------------------------------------------------------------------------


@dataclass
class ConfFile:
    """One YAML file of conf/: its header comment and the comment of each key (dotted path)."""

    path: Path
    package: str  # "" for the entry configs and `# @package _global_` files, else the group path
    header: str
    comments: dict[str, str | None] = field(default_factory=dict)
    parents: list[str] = field(default_factory=list)  # same-group options in its defaults list

    @property
    def name(self) -> str:
        return self.path.relative_to(CONF).as_posix()


_KEY = re.compile(r"""^(?P<indent> *)(?P<key>"[^"]*"|'[^']*'|[^\s#:'"][^:#]*?)\s*:(?:\s+|$)(?P<rest>.*)$""")


def _split_comment(text: str) -> tuple[str, str | None]:
    """``text`` (a YAML value) without its trailing comment, and the comment (None if none)."""
    quote = None
    for i, char in enumerate(text):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"" and (i == 0 or text[i - 1] in " [{,:"):
            quote = char
        elif char == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip(), text[i + 1 :].strip()
    return text.rstrip(), None


def parse_conf_file(path: Path) -> ConfFile:
    """Read ``path``'s comments: the header, and for every key the comment on its line or just above it."""
    lines = path.read_text().splitlines()
    group = path.relative_to(CONF).parent.as_posix()
    is_global = any(line.strip() == "# @package _global_" for line in lines[:3])
    package = "" if group == "." or is_global else group.replace("/", ".")
    header_lines = []
    for line in lines:
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            header_lines.append(line.lstrip("#").strip())
    # An indented header line is an example command or code: shown as code.
    shown = [f"`{h}`" if raw.startswith("#   ") and "`" not in h else h for raw, h in zip(
        (line for line in lines if line.startswith("#") and not line.startswith("# @package")), header_lines)]
    conf = ConfFile(path=path, package=package, header=" ".join(shown).strip())
    if package:  # the group's node (data.labels, callbacks): the option's header describes it
        conf.comments[package] = conf.header or None

    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    block: list[str] = []  # the comment lines just above the current line
    in_defaults = False
    for line in lines:
        stripped = line.strip()
        if not stripped:
            block = []
            continue
        if stripped.startswith("#"):
            if not stripped.startswith("# @package"):
                block.append(stripped.lstrip("#").strip())
            continue
        indent = len(line) - len(line.lstrip(" "))
        if stripped.startswith("- "):
            if in_defaults and indent <= 2:
                entry = _split_comment(stripped[2:])[0]
                if ":" not in entry and entry not in ("_self_", "train"):
                    conf.parents.append(entry)
            block = []
            continue
        match = _KEY.match(line)
        if not match:
            block = []
            continue
        key = match["key"].strip().strip("\"'")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if indent == 0:
            in_defaults = key == "defaults"
        if in_defaults:
            block = []
            continue
        value, inline = _split_comment(match["rest"])
        dotted = ".".join([*(k for _, k in stack), key])
        if package:
            dotted = f"{package}.{dotted}"
        # The file's header describes the file, not its first key.
        if block == header_lines and package == "" and not is_global:
            block = []
        comment = " ".join([*block, *([inline] if inline else [])]) or None
        conf.comments[dotted] = comment
        if not value:  # a mapping (or a block list) follows
            stack.append((indent, key))
        block = []
    return conf


def load_conf_files() -> dict[str, ConfFile]:
    return {f.name: f for f in (parse_conf_file(p) for p in sorted(CONF.rglob("*.yaml")))}


# --------------------------------------------------------------------------------------------
# Composed configs, flattened to dotted keys
# --------------------------------------------------------------------------------------------


def compose_entry(name: str, overrides: list[str] | None = None) -> tuple[dict, dict[str, Any]]:
    """The composed ``name`` config (hydra node included) as a container, and Hydra's choices."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides or [], return_hydra_config=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    container = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    return container, choices


def flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, Any, bool]]:
    """(dotted key, value, is_section) for every key: a section is a mapping, its value its _target_."""
    if isinstance(node, dict) and node:
        if prefix:
            yield prefix, node.get("_target_"), True
        for key, value in node.items():
            if key in META_KEYS:
                continue
            yield from flatten(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, node, False


@dataclass
class Key:
    path: str
    value: Any
    section: bool
    has_leaves: bool
    meaning: str | None


def entry_files(name: str, choices: dict[str, Any], files: dict[str, ConfFile]) -> list[ConfFile]:
    """The conf files of a composition, in the order their comments describe its keys."""
    ordered = [files[f"{name}.yaml"]]
    if "train" in _defaults_names(files[f"{name}.yaml"]):
        ordered.append(files["train.yaml"])
    local, global_ = [], []
    for group, option in choices.items():
        if option is None:
            continue
        for opt in option if isinstance(option, list) else [option]:
            conf = files.get(f"{group}/{opt}.yaml")
            if conf is None:
                continue
            (global_ if conf.package == "" else local).append(conf)
            local.extend(_parent_files(conf, files))
    return ordered + local + global_


def _defaults_names(conf: ConfFile) -> list[str]:
    text = conf.path.read_text()
    return re.findall(r"^\s*-\s*([A-Za-z_]+)\s*$", text, flags=re.MULTILINE)


def _parent_files(conf: ConfFile, files: dict[str, ConfFile]) -> list[ConfFile]:
    group = conf.path.relative_to(CONF).parent.as_posix()
    parents = []
    for parent in conf.parents:
        parent_file = files.get(f"{group}/{parent}.yaml")
        if parent_file is not None:
            parents.append(parent_file)
            parents.extend(_parent_files(parent_file, files))
    return parents


def meaning(path: str, ordered: list[ConfFile]) -> str | None:
    for conf in ordered:
        comment = conf.comments.get(path)
        if comment:
            return comment
    return None


def keys_of(container: dict, ordered: list[ConfFile], files: dict[str, ConfFile]) -> list[Key]:
    """Every key of a composition: the run's keys, and the hydra keys that its conf/ files set."""
    defined = {path for conf in ordered for path in conf.comments}
    packages = {conf.package for conf in files.values()}
    rows = []
    flat = list(flatten(container))
    for i, (path, value, section) in enumerate(flat):
        if path.startswith("hydra.") and path not in defined:
            continue
        has_leaves = section and any(p.startswith(path + ".") for p, _, _ in flat[i + 1 :])
        if path == "hydra" or (section and has_leaves and (path in packages or meaning(path, ordered) is None)):
            continue  # a plain grouping of keys (or a group's node): its keys carry the meaning
        rows.append(Key(path, value, section, has_leaves, meaning(path, ordered)))
    return rows


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def render_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '""' if value == "" else value
    if isinstance(value, list):
        return "[" + ", ".join(render_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {render_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def code(text: str) -> str:
    return f"`{cell(text)}`" if text else ""


def table(rows: list[Key]) -> list[str]:
    """A key's row; a node (a mapping, e.g. a callback) shows no default: its keys below have theirs."""
    out = ["| key | default | meaning |", "| --- | --- | --- |"]
    for row in rows:
        shown = "(node)" if row.section else code(render_value(row.value))
        out.append(f"| {code(row.path)} | {shown} | {cell(row.meaning or '')} |")
    return out


def sectioned_tables(rows: list[Key]) -> list[str]:
    """One table per top-level node (data, model, ...), the top-level keys first and hydra's last."""
    sections: dict[str, list[Key]] = {}
    for row in rows:
        top = row.path.split(".")[0] if "." in row.path else ""
        sections.setdefault(top, []).append(row)
    order = sorted(sections, key=lambda s: (s == "hydra", s != "", list(sections).index(s)))
    out = []
    for top in order:
        if len(sections) > 1:
            out += [f"#### {'top-level keys' if top == '' else top}", ""]
        out += table(sections[top]) + [""]
    return out


@dataclass
class Reference:
    text: str
    undescribed: list[str]  # "key (where)" of every key without a comment


def build() -> Reference:
    files = load_conf_files()
    undescribed: list[str] = []
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `make config-reference` (scripts/make_config_reference.py) from conf/. Do not edit:",
        "     edit the comments in conf/*.yaml and regenerate; tests/test_config_reference.py checks it. -->",
        "",
        "Every key of every entry point's config, its default and what it does, generated from `conf/`:",
        "the keys and defaults by composing the real configs with Hydra, the meanings from the comments",
        "next to each key in the YAML files. Defaults are shown as written, before interpolation",
        "(`${seed}` is the value of `seed` when the run starts); `???` is a value the command must be",
        "given. A node (a component built from its `_target_`, such as a callback) is listed with its",
        "keys. How groups, overrides, struct mode and multirun work: [Config groups](configuration.md).",
        "",
        "Set any key on the command line (`data.batch_size=32`), choose a group option with",
        "`group=option` (`trainer=gpu`), add a key the config lacks with `+key=value`, remove one",
        "with `~key`.",
        "",
    ]

    base_train, train_choices = compose_entry("train")
    train_files = entry_files("train", train_choices, files)
    train_keys = keys_of(base_train, train_files, files)
    train_index = {k.path: k for k in train_keys}

    lines += ["## Contents", ""]
    lines += [f"- [`{command}`](#{_anchor(command, name)})" for name, command in ENTRIES]
    lines += ["- [Config groups and their options](#config-groups-and-their-options)", ""]

    for name, command in ENTRIES:
        container, choices = (base_train, train_choices) if name == "train" else compose_entry(name)
        ordered = entry_files(name, choices, files)
        rows = keys_of(container, ordered, files)
        header = files[f"{name}.yaml"].header
        lines += [f"## {_title(command, name)}", ""]
        if header:
            lines += [header, ""]
        if name != "train":
            kept = [r for r in rows if not _same(r, train_index)]
            if "train" in _defaults_names(files[f"{name}.yaml"]):
                lines += ["It composes `train`: every key not listed here is train's, with its default.", ""]
            else:
                tops = sorted({r.path.split(".")[0] for r in rows if "." in r.path})
                shared = [t for t in tops if not any(r.path.startswith(t + ".") for r in kept)]
                if shared:
                    listed = ", ".join(f"`{t}.*`" for t in shared)
                    lines += [f"Its {listed} keys are train's, with the same defaults.", ""]
            rows = kept
        undescribed += [f"{r.path} (conf/{name}.yaml composed)" for r in rows if not r.meaning]
        lines += sectioned_tables(rows)

    lines += [
        "## Config groups and their options",
        "",
        "Each option is a file `conf/<group>/<option>.yaml`; the table under each option lists the keys it",
        "adds or whose default it changes, composed into its entry config (the `train` config unless named).",
        "",
    ]
    lines += _group_summary(files, train_choices)
    for group, options in _groups(files).items():
        entry = GROUP_ENTRY.get(group, "train")
        base, base_choices = (base_train, train_choices) if entry == "train" else compose_entry(entry)
        base_files = entry_files(entry, base_choices, files)
        base_flat = {p: v for p, v, _ in flatten(base)}
        default = base_choices.get(group)
        for option in options:
            conf = files[f"{group}/{option}.yaml"]
            if option == default or (isinstance(default, list) and option in default):
                continue
            chosen = default if isinstance(default, list) else [default]
            override = f"{group}=[{','.join([*chosen, option])}]" if group in LIST_GROUPS else f"{group}={option}"
            container, _ = compose_entry(entry, [override])
            ordered = [conf, *_parent_files(conf, files), *base_files]
            rows = [
                r
                for r in keys_of(container, ordered, files)
                if r.path not in base_flat or base_flat[r.path] != r.value
            ]
            rows = [r for r in rows if not r.path.startswith(("hydra.runtime", "hydra.overrides", "hydra.job."))]
            lines += [f"### `{override}`" + ("" if entry == "train" else f" (`{entry}`)"), ""]
            if conf.header:
                lines += [conf.header, ""]
            if rows:
                lines += table(rows) + [""]
            else:
                lines += ["(It changes no key: it is the default's configuration.)", ""]
            undescribed += [f"{r.path} (conf/{group}/{option}.yaml)" for r in rows if not r.meaning]
    text = "\n".join(lines).rstrip() + "\n"
    return Reference(text=text, undescribed=sorted(set(undescribed)))


def _title(command: str, name: str) -> str:
    return f"`{command}` (conf/{name}.yaml)"


def _anchor(command: str, name: str) -> str:
    title = _title(command, name).lower()
    return re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-")


def _same(row: Key, index: dict[str, Key]) -> bool:
    other = index.get(row.path)
    return other is not None and other.value == row.value and other.meaning == row.meaning


def _groups(files: dict[str, ConfFile]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for conf in files.values():
        group = conf.path.relative_to(CONF).parent.as_posix()
        if group != ".":
            groups.setdefault(group, []).append(conf.path.stem)
    return dict(sorted(groups.items()))


def _group_summary(files: dict[str, ConfFile], train_choices: dict[str, Any]) -> list[str]:
    out = ["| group | options (the default in bold) | entry | chooses |", "| --- | --- | --- | --- |"]
    _, serve_choices = compose_entry("serve")
    _, bench_choices = compose_entry("bench")
    defaults = {**train_choices, "backend": serve_choices["backend"], "bench": bench_choices["bench"]}
    for group, options in _groups(files).items():
        default = defaults.get(group)
        chosen = default if isinstance(default, list) else [default]
        shown = ", ".join(f"**{o}**" if o in chosen else o for o in options)
        entry = GROUP_ENTRY.get(group, "train")
        first = files[f"{group}/{options[0]}.yaml"]
        out.append(f"| `{group}` | {shown} | {entry} | {cell(_GROUP_MEANING.get(group, first.header))} |")
    return out + [""]


# What each group chooses, in one line (each option's own header says what that option is).
_GROUP_MEANING = {
    "backend": "how `src.serve` runs the model: the checkpoint in PyTorch, or the exported ONNX model in onnxruntime",
    "bench": "the `src.bench` case: model, image size, folder and which measurements run",
    "callbacks": "Lightning callbacks: checkpoints, staged freezing, learning-rate monitor, figures, throughput; "
    "add more with `callbacks=[default,ema]`",
    "data": "the DataModule: folder, split, image size, augmentation, loaders, scan",
    "data/labels": "where the labels come from: class folders, a CSV table, or a pattern over file names",
    "debug": "a smoke run: two batches per epoch, one epoch per stage",
    "experiment": "complete recipes that override only what differs from the defaults",
    "hparams_search": "an Optuna search over the learning rate, weight decay, batch size, dropout, augmentation",
    "hydra": "run and sweep directories, the log file, the sweep summary",
    "logger": "experiment trackers (Lightning loggers); `many` is TensorBoard, CSV and MLflow at once",
    "model": "the LightningModule: body, head, loss, regularisers, precision-related model settings",
    "optimizer": "the optimizer (a partial: its parameters are the model's layer groups)",
    "paths": "data, output and cache folders",
    "schedule": "the training stages (freezing, learning rates, epochs) and their one-cycle settings",
    "trainer": "Lightning's Trainer: accelerator, devices, precision, DDP",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the reference is out of date")
    args = parser.parse_args()
    reference = build()
    if reference.undescribed:
        print("keys without a comment in conf/ (add one next to the key):", file=sys.stderr)
        for key in reference.undescribed:
            print(f"  {key}", file=sys.stderr)
        return 1
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != reference.text:
            print(f"{OUTPUT.relative_to(PROJECT_ROOT)} is out of date: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(reference.text)
    print(f"wrote {OUTPUT.relative_to(PROJECT_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
