#!/usr/bin/python3
"""Renders kernel-pod templates with Jinja2 the way Enterprise Gateway's launch_kubernetes.py
does, for comparison with the gateway's own rendering.

stdin: a JSON list of cases, each {"template": <path>, "env": {<name>: <value>, ...}}.
stdout: a JSON list of results, each {"ok": <rendering>} or {"error": <message>}.

The launcher's configuration, reproduced: every KERNEL_* variable becomes a template variable
under its lower-cased name; KERNEL_VOLUMES and KERNEL_VOLUME_MOUNTS are loaded with
yaml.safe_load and must be lists of mappings; the template is loaded from its directory with
trim_blocks, lstrip_blocks and auto-escaping disabled for .j2 files; the yaml_safe filter
writes its value with PyYAML (strings double-quoted, lists and dicts in flow style, other
scalars plain, 10000 columns).
"""
import json
import os
import sys

import yaml
from jinja2 import Environment, FileSystemLoader, select_autoescape

STRUCTURED = ("KERNEL_VOLUMES", "KERNEL_VOLUME_MOUNTS")


def yaml_safe(value):
    if isinstance(value, str):
        text = yaml.dump(value, default_style='"', width=10000)
    elif isinstance(value, (dict, list)):
        text = yaml.dump(value, default_flow_style=True, width=10000)
    else:
        # A plain root scalar ends its document with "...".
        text = yaml.dump(value, width=10000).replace("\n...", "")
    return text.strip()


def variables(env):
    out = {}
    for name, value in env.items():
        if not name.startswith("KERNEL_"):
            continue
        if name in STRUCTURED:
            loaded = yaml.safe_load(value)
            if not isinstance(loaded, list) or not all(isinstance(i, dict) for i in loaded):
                raise ValueError(f"{name} must be a YAML list of mappings")
            out[name.lower()] = loaded
        else:
            out[name.lower()] = value
    return out


def render(case):
    path = os.path.abspath(case["template"])
    environment = Environment(
        loader=FileSystemLoader(os.path.dirname(path)),
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=select_autoescape(
            disabled_extensions=("j2", "yaml"), default_for_string=True, default=True
        ),
    )
    environment.filters["yaml_safe"] = yaml_safe
    template = environment.get_template("/" + os.path.basename(path))
    return template.render(**variables(case["env"]))


def main():
    results = []
    for case in json.load(sys.stdin):
        try:
            results.append({"ok": render(case)})
        except Exception as exc:  # every failure is a result to compare
            results.append({"error": f"{type(exc).__name__}: {exc}"})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
