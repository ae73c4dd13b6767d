"""
resmon as users get it: C{python -m build} makes an sdist and a wheel from a
copy of this source tree (one a developer has used: Twisted's plugin cache,
bytecode, a stale C{build/lib} and a built example lie in it); the wheel
installs into a fresh virtual environment, whose C{twistd resmon} serves the
dashboard from a directory outside the checkout; the unpacked sdist installs
with the README's command and runs tests; the README's C{pip install .} from
the checkout builds the same wheel. The version is written once, in
C{resmon/__init__.py}, and every artefact carries it.

Real parts only: the real build frontend and setuptools (from PyPI, through
pip's cache), a real venv, real C{twistd} processes, real HTTP. About a
minute with a warm pip cache.
"""

import ast
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import uuid
import zipfile

import pytest

from support import LOG_DIR, catchesSIGTERM, freePort

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Where the sdist must hold every file of the source tree (besides resmon/).
SHIPPED_DIRECTORIES = ("docs", "tests", "examples", "contrib", "web", "bench")
SHIPPED_FILES = ("README.md", "LICENSE", "setup.py", "pyproject.toml", "MANIFEST.in", "pytest.ini",
                 "twisted/plugins/resmon_plugin.py")
# What a used checkout holds and no package may: (path, contents).
JUNK = [
    ("twisted/plugins/dropin.cache", b"Twisted's plugin cache, written by the first twistd run"),
    ("build/lib/resmon/stale_module.py", b"# left in build/lib by an earlier version\n"),
    ("build/lib/twisted/plugins/dropin.cache", b"stale"),
    ("tests/__pycache__/support.cpython-311.pyc", b"bytecode"),
    ("examples/dropin/__pycache__/loadpercore.cpython-311.pyc", b"bytecode"),
    ("examples/resmon-example-analyzer/build/lib/resmon_example_analyzer/__init__.py", b"# built\n"),
    ("examples/resmon-example-analyzer/resmon_example_analyzer.egg-info/PKG-INFO", b"Name: x\n"),
]
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", "artifacts",
                                    ".pytest_cache", ".hypothesis", "__pycache__", "*.pyc",
                                    "_trial_temp", "dropin.cache", "mutants")
# Tests that need the files the sdist adds (docs, examples, contrib, web)
# and the installed distribution (entry points, twistd plugin), but no broker.
SDIST_TESTS = ["tests/test_layout.py", "tests/test_public_api.py", "tests/test_units_systemd_units.py",
               "tests/test_web_modules.py", "tests/test_plugins.py"]


def sourceVersion(root):
    """
    The version written in C{root/resmon/__init__.py}, read as setup.py does.
    """
    module = ast.parse((root / "resmon" / "__init__.py").read_text(encoding="utf-8"))
    for node in module.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "__version__":
            return ast.literal_eval(node.value)
    pytest.fail("resmon/__init__.py has no __version__", pytrace=False)


def childEnvironment(**extra):
    """
    This process's environment (pip's configuration included) without what
    would make a child import another resmon than the one under test.
    """
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    env.update(PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", **extra)
    return env


def _tail(output, lines=30):
    kept = [line for line in (output or "").splitlines() if "is ignored: it is neither" not in line]
    return "\n".join(kept[-lines:])


def run(argv, what, cwd, timeout=240, env=None):
    """
    Run C{argv} to its end; fail the test, naming C{what} and showing the end
    of the output, if it fails or takes longer than C{timeout} seconds.

    @return: its output (stdout and stderr).
    """
    argv = [str(arg) for arg in argv]
    command = " ".join(argv)
    try:
        result = subprocess.run(argv, cwd=cwd, env=env or childEnvironment(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        output = e.output.decode(errors="replace") if isinstance(e.output, bytes) else e.output
        pytest.fail(f"{what}: still running after {timeout} s\n$ {command}\n{_tail(output)}", pytrace=False)
    if result.returncode != 0:
        pytest.fail(f"{what} failed (exit code {result.returncode})\n$ {command}\n"
                    f"--- last lines ---\n{_tail(result.stdout)}", pytrace=False)
    return result.stdout


def filesUnder(root, *tops):
    """
    Every file under C{root/top} for each of C{tops}, as POSIX paths relative
    to C{root}.
    """
    return {path.relative_to(root).as_posix()
            for top in tops for path in (root / top).rglob("*") if path.is_file()}


def isJunk(name):
    parts = name.split("/")
    return ("__pycache__" in parts or name.endswith((".pyc", ".pyo")) or parts[-1] == "dropin.cache"
            or any(part.endswith(".egg-info") for part in parts[:-1] if part != "resmon.egg-info")
            or "stale_module" in name or "/build/" in f"/{name}")


def wheelFiles(path):
    """
    The files of the wheel at C{path}, its C{.dist-info} left out.
    """
    with zipfile.ZipFile(path) as wheel:
        return {name for name in wheel.namelist() if ".dist-info/" not in name}


def wheelVersion(path):
    with zipfile.ZipFile(path) as wheel:
        [metadata] = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
        for line in wheel.read(metadata).decode().splitlines():
            if line.startswith("Version: "):
                return line[len("Version: "):]
    return None


class Built:
    """
    The artefacts the tests share: the used source copy, the sdist, the
    wheel, and a fresh venv with the wheel installed.
    """


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not (ROOT / "setup.py").exists():
        pytest.fail(f"{ROOT} has no setup.py: run the tests from a checkout or an unpacked sdist",
                    pytrace=False)
    b = Built()
    b.top = tmp_path_factory.mktemp("packaging")
    b.source = b.top / "source"
    shutil.copytree(ROOT, b.source, ignore=NOT_COPIED)
    b.expectedInSdist = filesUnder(b.source, *SHIPPED_DIRECTORIES) | filesUnder(b.source, "resmon") | set(
        SHIPPED_FILES)
    b.expectedInWheel = ({f"resmon/webroot/{name[len('web/'):]}" for name in filesUnder(b.source, "web")}
                         | filesUnder(b.source, "resmon") | {"twisted/plugins/resmon_plugin.py"})
    for name, contents in JUNK:
        path = b.source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(contents)
    b.version = sourceVersion(b.source)

    b.dist = b.top / "dist"
    b.buildLog = run([sys.executable, "-m", "build", "--outdir", b.dist, b.source],
                     "python -m build (sdist, then the wheel from the sdist)", cwd=b.top)
    assert "Building wheel from sdist" in b.buildLog, _tail(b.buildLog)
    b.sdist = b.dist / f"resmon-{b.version}.tar.gz"
    b.wheel = b.dist / f"resmon-{b.version}-py3-none-any.whl"
    assert sorted(os.listdir(b.dist)) == sorted([b.sdist.name, b.wheel.name]), (
        f"python -m build should make {b.sdist.name} and {b.wheel.name} (the version in "
        f"resmon/__init__.py), made {sorted(os.listdir(b.dist))}")

    b.venv = b.top / "venv"
    run([sys.executable, "-m", "venv", b.venv], "creating a fresh venv", cwd=b.top)
    b.bin = b.venv / "bin"
    run([b.bin / "pip", "install", "-q", b.wheel], "installing the wheel into a fresh venv", cwd=b.top)
    b.outside = b.top / "elsewhere"
    b.outside.mkdir()
    return b


def test_sdistHoldsWhatTheTestsAndDocsNeed(built):
    """
    The sdist holds every file of docs/, tests/, examples/, contrib/, web/,
    bench/ and resmon/ (the AMQP spec and its note included), the README,
    licence and build files, and the twistd plugin; nothing a used checkout
    accumulates; no C{__init__.py} over Twisted's own C{twisted/} packages.
    """
    with tarfile.open(built.sdist) as sdist:
        prefix = f"resmon-{built.version}/"
        names = {member.name[len(prefix):] for member in sdist.getmembers() if member.isfile()}
    missing = sorted(built.expectedInSdist - names)
    assert not missing, f"{built.sdist.name} lacks {missing}: add them to MANIFEST.in"
    junk = sorted(name for name in names if isJunk(name))
    assert not junk, f"{built.sdist.name} ships {junk}: exclude them in MANIFEST.in"
    assert "twisted/__init__.py" not in names and "twisted/plugins/__init__.py" not in names
    assert {"resmon/bus/amqp0-9-1.stripped.extended.xml", "resmon/bus/SPEC-ORIGIN.md",
            "tests/conftest.py", "tests/support.py", "web/js/main.js",
            "contrib/systemd/resmon-server.service"} <= names


def test_wheelHoldsResmonAndOnlyResmon(built):
    """
    The wheel (built by C{python -m build} from the sdist) holds every module
    of resmon, the AMQP spec and its note, the dashboard's files as
    C{resmon/webroot} (the ES modules of web/js included) and the twistd
    plugin: nothing else, no plugin cache, no C{twisted/__init__.py} nor
    C{twisted/plugins/__init__.py} (installing either would overwrite
    Twisted's), no module left in C{build/lib}. Its metadata carries the
    version of C{resmon/__init__.py}.
    """
    files = wheelFiles(built.wheel)
    missing = sorted(built.expectedInWheel - files)
    extra = sorted(files - built.expectedInWheel)
    assert not missing, f"{built.wheel.name} lacks {missing} (setup.py packages/package_data)"
    assert not extra, f"{built.wheel.name} ships what it should not: {extra}"
    assert {"resmon/webroot/index.html", "resmon/webroot/js/main.js", "resmon/webroot/js/charts.js",
            "resmon/bus/amqp0-9-1.stripped.extended.xml"} <= files
    assert wheelVersion(built.wheel) == built.version


def test_readmeInstallFromACheckoutBuildsTheSameWheel(built):
    """
    The README's C{pip install .} builds in the checkout itself, where an
    earlier build left C{build/lib}: its wheel holds the same files as
    C{python -m build}'s, not the stale module.
    """
    out = built.top / "inplace"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, "."],
        "pip wheel . (what pip install . builds) in the used checkout", cwd=built.source)
    [wheel] = out.iterdir()
    assert wheel.name == built.wheel.name
    assert wheelFiles(wheel) == wheelFiles(built.wheel), (
        f"pip's in-place build differs from python -m build's: "
        f"{sorted(wheelFiles(wheel) ^ wheelFiles(built.wheel))}")


def _get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read().decode()


def test_twistdFromTheFreshVenv(built):
    """
    From a directory outside the checkout, the fresh venv's C{twistd} finds
    the resmon plugin (C{--help}, C{--version} with the one version), imports
    resmon from the venv, and C{twistd -n resmon --role=standalone} serves
    the dashboard's page and modules, then stops cleanly on SIGTERM.
    """
    cwd = built.outside
    helpText = run([built.bin / "twistd", "resmon", "--help"], "twistd resmon --help (fresh venv)", cwd)
    assert "--role=" in helpText and "--broker=" in helpText, _tail(helpText)
    version = run([built.bin / "twistd", "resmon", "--version"], "twistd resmon --version", cwd)
    assert version.strip() == f"resmon {built.version}"
    where = run([built.bin / "python", "-c", "import resmon; print(resmon.__file__)"], "import resmon", cwd)
    assert where.strip().startswith(str(built.venv)), f"resmon imported from {where.strip()}, not the venv"
    commands = run([built.bin / "resmon-provision-agent", "web01"], "resmon-provision-agent", cwd)
    assert "rabbitmqctl set_topic_permissions -p / -- agent-web01 resmon '^web01\\.measure$' '^$'" in (
        commands), _tail(commands)
    agentHelp = run([built.bin / "resmon-agent", "--help"], "resmon-agent --help", cwd)
    assert "Usage: resmon-agent [options]" in agentHelp, _tail(agentHelp)
    agentVersion = run([built.bin / "resmon-agent", "--version"], "resmon-agent --version", cwd)
    assert agentVersion.strip() == f"resmon {built.version}"

    port = freePort()
    os.makedirs(LOG_DIR, exist_ok=True)
    logPath = os.path.join(LOG_DIR, f"packaging-standalone-{uuid.uuid4().hex[:6]}.log")
    argv = [str(built.bin / "twistd"), "-n", "--pidfile=", "resmon", "--role=standalone", f"--port={port}"]
    with open(logPath, "w+b") as log:
        process = subprocess.Popen(argv, cwd=cwd, env=childEnvironment(PYTHONUNBUFFERED="1"),
                                   stdout=log, stderr=subprocess.STDOUT)

        def problem(what):
            return f"{what}\n$ {' '.join(argv)}\nlog: {logPath}\n{_tail(pathlib.Path(logPath).read_text())}"

        try:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, problem(f"twistd exited ({process.returncode}) before serving")
                try:
                    status, contentType, page = _get(f"http://127.0.0.1:{port}/")
                    break
                except urllib.error.HTTPError as e:
                    pytest.fail(problem(f"GET / answered {e.code} {e.reason}"), pytrace=False)
                except (urllib.error.URLError, ConnectionError):
                    assert time.monotonic() < deadline, problem("the dashboard did not answer in 30 s")
                    time.sleep(0.1)
            assert (status, contentType) == (200, "text/html"), problem(f"GET / gave {status} {contentType}")
            assert '<script type="module" src="js/main.js">' in page, problem("GET / is not the dashboard")
            status, contentType, module = _get(f"http://127.0.0.1:{port}/js/main.js")
            assert status == 200 and "javascript" in contentType, problem(f"GET /js/main.js: {contentType}")
            assert "import {" in module, problem("GET /js/main.js is not the dashboard's module")

            while not catchesSIGTERM(process.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pytest.fail(problem("twistd still running 15 s after SIGTERM"), pytrace=False)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = pathlib.Path(logPath).read_text()
    assert process.returncode in (0, -signal.SIGTERM), problem(f"exit status {process.returncode}")
    assert "Server Shut Down." in output, problem("no clean shutdown")
    assert "Traceback" not in output and "Unhandled error" not in output, problem("an error in the log")


def test_sdistInstallsAndRunsTests(built):
    """
    The unpacked sdist installs with the README's command (C{pip install
    '.[test]'}, a wheel built from the sdist itself), and tests that need
    its docs, examples, units and web files pass there, against the
    installed resmon.
    """
    unpacked = built.top / "unpacked"
    with tarfile.open(built.sdist) as sdist:
        if hasattr(tarfile, "data_filter"):
            sdist.extractall(unpacked, filter="data")
        else:
            sdist.extractall(unpacked)
    root = unpacked / f"resmon-{built.version}"
    assert (root / "tests" / "conftest.py").exists()
    run([built.bin / "pip", "install", "-q", ".[test]"], "pip install '.[test]' in the unpacked sdist", root)
    env = childEnvironment(RESMON_TEST_LOGS=str(built.top / "logs"))
    output = run([built.bin / "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", *SDIST_TESTS],
                 "the tests from the unpacked sdist", root, env=env)
    assert " passed" in output, _tail(output)
    where = run([built.bin / "python", "-c", "import resmon; print(resmon.__file__)"], "import resmon",
                built.outside)
    assert where.strip().startswith(str(built.venv))
