"""Example workflows (the YAML files beside this module) and the functions they call.

Kept free of heavy imports: worker processes import the example functions from here.
"""

from __future__ import annotations

from importlib.resources import files


def example_files() -> dict[str, str]:
    """Example definitions by file name."""
    folder = files("execflow.examples")
    return {
        entry.name: entry.read_text()
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".yaml")
    }
