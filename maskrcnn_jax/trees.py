"""Nested dicts <-> {path tuple: leaf} (parameter trees, JSON configs); plain Python, no Flax."""

from typing import Mapping


def flatten_dict(tree, prefix: tuple = ()) -> dict:
    """{("a", "b"): leaf} for every leaf of nested dicts; a non-dict `tree` is one leaf at `prefix`."""
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(flatten_dict(value, prefix + (key,)))
    return flat


def unflatten_dict(flat: dict) -> dict:
    """The inverse of `flatten_dict`."""
    tree = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree
