"""The house rules: imports point down the layers, no circles, the root holds the design card only.

Layers, bottom up (docs/ARCHITECTURE.md): core -> db -> chain -> botapi -> runtime -> dr
-> handlers -> the programs (bot.py, worker.py). A module may import its own layer or
any layer below; every import of ours sits at module level (an import inside a
function would hide a circle); devstack/ and tests/ are tooling the product never imports.
"""
import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RANK = {"core": 0, "db": 1, "chain": 2, "botapi": 3, "runtime": 4, "dr": 5, "handlers": 6, "bot": 7, "worker": 7}
PROGRAMS = {"bot", "worker"}
TOOLING = {"devstack", "tests", "bench"}
SKIPPED_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".pytest_cache", "state"}
ROOT_FILES = {"bot.py", "worker.py", "dr.py", "models.sql", "requirements.txt", "requirements-dev.txt",
              ".env.example", "README.md", "Makefile", "package.json", "package-lock.json", "pytest.ini",
              ".gitignore"}


def modules(root: Path) -> dict[str, Path]:
    """Every Python module under `root` by dotted name (tooling included, tests excluded)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if SKIPPED_DIRS & set(parts) or parts[0] == "tests":
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(path: Path, known: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(our module imported, line, at module level) for every import statement in `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in RANK.keys() | TOOLING:
                found.append((target, node.lineno, id(node) in top_level))
    return found


def layer(module: str) -> str:
    return module.split(".")[0]


def violations(root: Path) -> list[str]:
    """Every break of the house rules under `root`, one line each."""
    known = modules(root)
    problems, graph = [], {name: set() for name in known}
    for name, path in known.items():
        if layer(name) not in RANK and layer(name) not in TOOLING:
            problems.append(f"{name}: not in a layer package ({', '.join(sorted(RANK))})")
            continue
        for target, line, at_top in imports_of(path, known):
            graph[name].add(target)
            where = f"{path.relative_to(root)}:{line}"
            if layer(name) in TOOLING:
                continue
            if not at_top:
                problems.append(f"{where}: {name} imports {target} inside a function or class")
            if layer(target) in TOOLING:
                problems.append(f"{where}: {name} imports tooling {target}")
            elif RANK[layer(target)] > RANK[layer(name)]:
                problems.append(f"{where}: {name} imports {target} from a layer above")
            elif layer(name) in PROGRAMS and layer(target) in PROGRAMS and layer(target) != layer(name):
                problems.append(f"{where}: program {name} imports program {target}")
    problems += [f"import circle: {' -> '.join(cycle)}" for cycle in circles(graph)]
    return problems


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One example path per circle found by depth-first search (each back edge closes one)."""
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                found.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_every_import_points_down_and_nothing_imports_in_a_circle():
    assert violations(ROOT) == []


def test_every_product_module_sits_in_a_layer():
    placed = {layer(name) for name in modules(ROOT)}
    assert placed <= RANK.keys() | TOOLING
    assert {"core", "db", "chain", "botapi", "runtime", "dr", "handlers", "bot", "worker"} <= placed


def test_the_checker_catches_upward_imports_circles_and_hidden_imports(tmp_path):
    files = {
        "core/__init__.py": "",
        "core/low.py": "from db import high\n",  # upward
        "db/__init__.py": "",
        "db/high.py": "import core.low\n",
        "db/first.py": "from db import second\n",
        "db/second.py": "def later():\n    from db import first\n",  # hidden inside a function, and a circle
        "handlers/__init__.py": "",
        "handlers/flows.py": "import devstack.console\n",  # product importing tooling
        "bot.py": "import worker\n",
        "worker.py": "",
        "helpers.py": "",  # outside every layer
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = "\n".join(violations(tmp_path))
    assert "core.low imports db.high from a layer above" in found
    assert "db.second imports db.first inside a function" in found
    assert "import circle: core.low -> db.high -> core.low" in found
    assert "import circle: db.first -> db.second -> db.first" in found
    assert "handlers.flows imports tooling devstack.console" in found
    assert "program bot imports program worker" in found
    assert "helpers: not in a layer package" in found


def tracked_root_entries() -> tuple[set[str], set[str]]:
    """Files and folders at the repository root that git tracks."""
    listing = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listing.returncode != 0:
        pytest.skip("not a git checkout")
    paths = [line for line in listing.stdout.splitlines() if line]
    files = {path for path in paths if "/" not in path}
    folders = {path.split("/")[0] for path in paths if "/" in path}
    return files, folders


def test_the_root_holds_the_design_card_and_folders_only():
    files, folders = tracked_root_entries()
    assert files <= ROOT_FILES, f"move into a layer package: {sorted(files - ROOT_FILES)}"
    assert {"migrations", "tests", ".ci", "docs"} <= folders


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("document", ["README.md", "docs/ARCHITECTURE.md"])
def test_links_resolve_inside_the_repository(document):
    path = ROOT / document
    links = [link for link in LINK.findall(path.read_text()) if not re.match(r"[a-z]+:", link)]
    assert links, f"{document} links nothing"
    for link in links:
        target = (path.parent / link).resolve()
        assert target.is_relative_to(ROOT) and target.exists(), f"{document}: broken or outside link {link}"
