"""The layer rule of docs/architecture.md, read from the package's own import statements: a room
imports only rooms below it, so an arrow that runs back up (e.g. detector -> models, ops -> detector)
fails here with the file that draws it."""

import ast
import pathlib

import maskrcnn_jax

PACKAGE = pathlib.Path(maskrcnn_jax.__file__).parent
# Bottom to top; a room may import its own layer's rooms and any room of a layer below. Top-level
# modules not named here (api, demo, checkpoint, ...) are the top layer.
LAYERS = (
    ("ops", "coco_classes", "trees"),
    ("data",),
    ("detector",),
    ("models",),
    ("evaluation", "checkpoint"),
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
