"""The layer rule of docs/architecture.md, read from the package's own import statements: a room
imports only rooms below it, so an arrow that runs back up (e.g. detector -> models, ops -> detector)
fails here with the file that draws it; and only models/ imports Flax (elsewhere only
flax.traverse_util, its plain nested-dict helpers, no modules)."""

import ast
import pathlib

import maskrcnn_jax

PACKAGE = pathlib.Path(maskrcnn_jax.__file__).parent
# Bottom to top; a room may import its own layer's rooms and any room of a layer below. Top-level
# modules not named here (demo, the converters, ...) are the top layer. Host-side prediction
# (inference) shares a layer with evaluation, which pastes and encodes its mask windows, with the
# drawing that `Detector.draw` calls and that tints those windows, and with export, whose
# ExportedDetector is what `Detector.from_exported` returns. storage.py (local or gs:// paths)
# imports no room, so it sits at the bottom, under checkpoint and training, which write through it.
LAYERS = (
    ("ops", "storage"),
    ("data",),
    ("detector",),
    ("models",),
    ("evaluation", "checkpoint", "inference", "drawing", "export"),
    ("training",),
)
TOP = len(LAYERS)


def layer(room: str) -> int:
    return next((index for index, rooms in enumerate(LAYERS) if room in rooms), TOP)


def room_of(path: pathlib.Path, package: pathlib.Path) -> str:
    parts = path.relative_to(package).parts
    return parts[0].removesuffix(".py")


def imported_rooms(path: pathlib.Path) -> set[str]:
    """The package rooms a file imports (maskrcnn_jax.X... -> X), at any depth of the file."""
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
        rooms.update(name.split(".")[1] for name in names if name.startswith("maskrcnn_jax."))
    return rooms


def imported_modules(path: pathlib.Path) -> list[str]:
    """Every module a file imports, at any depth ("from a.b import c" -> "a.b.c"; relative ones left out)."""
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules += [f"{node.module}.{alias.name}" for alias in node.names]
    return modules


def flax_outside_models(package: pathlib.Path) -> list[str]:
    """'file: module' for each Flax import outside models/ other than flax.traverse_util's helpers."""
    found = []
    for path in sorted(package.rglob("*.py")):
        if room_of(path, package) == "models":
            continue
        for module in imported_modules(path):
            if (module == "flax" or module.startswith("flax.")) and not module.startswith("flax.traverse_util"):
                found.append(f"{path.relative_to(package.parent)}: {module}")
    return found


def upward_imports(package: pathlib.Path) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        room = room_of(path, package)
        for target in sorted(imported_rooms(path) - {room}):
            if layer(target) > layer(room):
                found.append(f"{path.relative_to(package.parent)}: {room} -> {target}")
    return found


def test_no_room_imports_a_room_above_it():
    assert upward_imports(PACKAGE) == []


def test_an_upward_import_is_found(tmp_path):
    """The check itself: a planted detector -> models and ops -> detector are both reported."""
    package = tmp_path / "maskrcnn_jax"
    (package / "detector").mkdir(parents=True)
    (package / "ops").mkdir()
    (package / "models").mkdir()
    (package / "detector" / "losses.py").write_text("from maskrcnn_jax.models.norm import BatchNorm\n")
    (package / "ops" / "boxes.py").write_text("def f():\n    import maskrcnn_jax.detector.spec\n")
    (package / "models" / "norm.py").write_text("from maskrcnn_jax.detector.spec import NORM_STATISTICS\n")
    assert upward_imports(package) == ["maskrcnn_jax/detector/losses.py: detector -> models",
                                       "maskrcnn_jax/ops/boxes.py: ops -> detector"]


def test_only_models_imports_flax():
    assert flax_outside_models(PACKAGE) == []


def test_a_flax_import_outside_models_is_found(tmp_path):
    """The check itself: flax.linen in detector/ and flax's struct in training/ are reported; traverse_util
    (plain dict helpers) and anything in models/ are not."""
    package = tmp_path / "maskrcnn_jax"
    for room in ("detector", "training", "models"):
        (package / room).mkdir(parents=True)
    (package / "detector" / "losses.py").write_text(
        "import flax.linen as nn\nfrom flax.traverse_util import flatten_dict\n")
    (package / "training" / "state.py").write_text("from flax import struct, traverse_util\n")
    (package / "models" / "fpn.py").write_text("from flax import linen as nn\n")
    assert flax_outside_models(package) == ["maskrcnn_jax/detector/losses.py: flax.linen",
                                            "maskrcnn_jax/training/state.py: flax.struct"]
