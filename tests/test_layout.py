"""
The layering C{docs/architecture.md} describes: the shared modules import no
role's package, the role packages do not import each other or the services,
and only C{resmon.tap} and the services tie them together.
"""

import ast
import pathlib

import resmon

ROOT = pathlib.Path(resmon.__file__).parent
SHARED = {"resmon", "resmon.wire", "resmon.topics", "resmon.interfaces", "resmon.ratelimit",
          "resmon.defaults", "resmon.deferreds", "resmon.periodic", "resmon.database",
          "resmon.atomicfile"}
# What each part may import from resmon, besides itself and the shared modules.
ALLOWED = {
    "shared": set(),
    "resmon.agent": set(),
    "resmon.analysis": set(),
    # Rules are plugins found, checked and isolated as analyzers are.
    "resmon.rules": {"resmon.analysis"},
    "resmon.webserver": {"resmon.auth"},
    # Users, sessions and who may see what: used by the web role.
    "resmon.auth": set(),
    "resmon.bus": set(),
    "resmon.operations": set(),
    "resmon.webhooks": set(),
    "resmon.analyzers": {"resmon.analysis"},
    "resmon.pipeline": {"resmon.analysis"},
    "resmon.services": {"resmon.agent", "resmon.analysis", "resmon.webserver", "resmon.bus",
                        "resmon.operations", "resmon.webhooks", "resmon.rules", "resmon.auth"},
    # resmon-agent: the agent's options and service tree, without twistd.
    "resmon.agentrunner": {"resmon.tap", "resmon.operations"},
    "resmon.tap": {"resmon.agent", "resmon.analysis", "resmon.webserver", "resmon.bus",
                   "resmon.services", "resmon.operations", "resmon.webhooks", "resmon.rules",
                   "resmon.auth"},
}


def _moduleName(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _part(module):
    if module in SHARED:
        return "shared"
    return ".".join(module.split(".")[:2])


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for alias in node.names:
                yield f"{node.module}.{alias.name}"


def _resmonModules():
    return {_moduleName(path) for path in ROOT.rglob("*.py")}


def test_no_part_imports_upward_or_sideways():
    known = _resmonModules()
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        module = _moduleName(path)
        part = _part(module)
        allowed = ALLOWED[part] | {part} | {"shared"}
        for imported in _imports(path):
            if imported not in known:
                continue
            if _part(imported) not in allowed:
                wrong.append(f"{module} imports {imported}")
    assert wrong == []


def test_every_module_belongs_to_a_known_part():
    assert {_part(module) for module in _resmonModules()} <= set(ALLOWED)
