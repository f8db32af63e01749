"""Parse deploy/Dockerfile and .dockerignore well enough to test them.

No Docker engine is needed: this reads the instructions (with line
continuations and ARG defaults) and evaluates .dockerignore patterns the way
Docker does (last matching pattern wins; a pattern matching a parent directory
applies to everything below it).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    """One build stage: its base image, name and instructions (upper-cased verbs)."""

    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, verb: str) -> list[str]:
        return [args for v, args in self.instructions if v == verb]

    def last(self, verb: str) -> str | None:
        found = self.all(verb)
        return found[-1] if found else None


def instructions(text: str) -> list[tuple[str, str]]:
    """(VERB, arguments) pairs, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        verb, _, args = buffer.strip().partition(" ")
        result.append((verb.upper(), args.strip()))
        buffer = ""
    return result


def stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages, ``${ARG}`` in FROM resolved."""
    global_args: dict[str, str] = {}
    found: list[Stage] = []
    for verb, args in instructions(text):
        if verb == "FROM":
            parts = args.split()
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), ""), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            found.append(Stage(image, name))
        elif not found:
            if verb == "ARG":
                key, _, default = args.partition("=")
                global_args[key.strip()] = default.strip()
        else:
            found[-1].instructions.append((verb, args))
    return global_args, found


def exec_form(args: str) -> list[str]:
    """ENTRYPOINT/CMD arguments; the JSON (exec) form is required."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def env_pairs(args: str) -> dict[str, str]:
    """``ENV a=1 b=2`` (the legacy ``ENV a 1`` form too)."""
    tokens = shlex.split(args)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(t.split("=", 1) for t in tokens)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(ch, re.escape(ch))
        i += 1
    return re.compile(f"^{out}$")


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes?, regex) per .dockerignore line, in order."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.strip().strip("/")
        rules.append((not negate, _pattern_regex(pattern)))
    return rules


def in_context(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Is ``path`` (relative, with /) sent to the builder?"""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for excludes, regex in rules:
        if any(regex.match(p) for p in prefixes):
            excluded = excludes
    return not excluded


def context_files(root: Path, rules: list[tuple[bool, re.Pattern[str]]]) -> set[str]:
    skip = {".git", ".venv", ".cache", "node_modules"}
    files = set()
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if rel.parts[0] in skip or not path.is_file():
            continue
        if in_context(rel.as_posix(), rules):
            files.add(rel.as_posix())
    return files
