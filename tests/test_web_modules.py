"""
The dashboard's browser code: native ES modules under web/js/, loaded
without a build step, and served with a JavaScript content type (a browser
refuses a module script served as anything else).
"""

import os
import re

import pytest_twisted
from twisted.internet import reactor
from twisted.web.client import Agent, readBody

from support import freePort

WEB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "web")
MODULES = os.path.join(WEB, "js")
IMPORT = re.compile(r'^import\s*\{([^}]*)\}\s*from\s*"([^"]+)";', re.MULTILINE)
EXPORT = re.compile(r"^export\s+(?:const|let|function|class)\s+([A-Za-z_$][\w$]*)", re.MULTILINE)


def _modules():
    return sorted(name for name in os.listdir(MODULES) if name.endswith(".js"))


def _read(name):
    with open(os.path.join(MODULES, name), encoding="utf-8") as f:
        return f.read()


def test_page_loads_one_module_script_and_nothing_from_elsewhere():
    with open(os.path.join(WEB, "index.html"), encoding="utf-8") as f:
        page = f.read()
    assert re.findall(r"<script[^>]*>", page) == ['<script type="module" src="js/main.js">']
    for name in _modules():
        assert not re.search(r"""from\s*["'](?!\./)""", _read(name)), f"{name} imports from elsewhere"
        assert "http://" not in _read(name).replace("http://www.w3.org/2000/svg", ""), name
        assert "https://" not in _read(name), name


def test_every_imported_name_is_exported_by_its_module():
    """
    A missing export stops the whole page before any code runs: check
    every import of every module against the exports of the module it
    names.
    """
    exports = {name: set(EXPORT.findall(_read(name))) for name in _modules()}
    reached = {"main.js"}
    for name in _modules():
        for names, source in IMPORT.findall(_read(name)):
            target = os.path.basename(source)
            assert source == f"./{target}" and target in exports, (name, source)
            reached.add(target)
            for imported in (n.strip() for n in names.split(",")):
                if imported:
                    assert imported in exports[target], f"{name} imports {imported} from {target}"
    assert reached == set(_modules()), "modules that nothing imports"


@pytest_twisted.inlineCallbacks
def test_modules_are_served_as_javascript(twistd):
    port = freePort()
    standalone = twistd("modules", f"--port={port}", "--interface=127.0.0.1", "--name=modules")
    yield standalone.waitForOutput(b"dashboard listening", timeout=15)
    for name in ["../index.html"] + _modules():
        path = "/" if name == "../index.html" else f"/js/{name}"
        response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}{path}".encode())
        body = yield readBody(response)
        assert response.code == 200, path
        [contentType] = response.headers.getRawHeaders(b"content-type")
        expected = b"text/html" if path == "/" else b"text/javascript"
        assert contentType.split(b";")[0] == expected, (path, contentType)
        assert body
    assert (yield standalone.stop(timeout=5)), standalone.logPath
