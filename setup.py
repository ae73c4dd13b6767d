import ast
import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def readVersion():
    """
    resmon's version, read (not imported) from C{resmon/__init__.py}: the one
    place it is written. C{twistd resmon --version} prints the same.
    """
    path = os.path.join(HERE, "resmon", "__init__.py")
    with open(path, encoding="utf-8") as f:
        module = ast.parse(f.read(), path)
    for node in module.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], "id", None) == "__version__"):
            return ast.literal_eval(node.value)
    raise RuntimeError(f"no __version__ = '...' in {path}")


class CleanBuildPy(build_py):
    """
    Copy resmon's packages into a build directory emptied of them first.
    pip builds a checkout in place (C{pip install .}), and a module an earlier
    version left in C{build/lib} (since moved or removed) would otherwise be
    installed too.
    """

    def run(self):
        buildLib = os.path.abspath(self.build_lib)
        if not getattr(self, "editable_mode", False) and buildLib != HERE:
            for top in ("resmon", "twisted"):
                shutil.rmtree(os.path.join(buildLib, top), ignore_errors=True)
        super().run()


with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="resmon",
    version=readVersion(),
    description="Reactive resource monitor for fleets of machines, on Twisted and RabbitMQ",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["resmon", "resmon.*"]) + ["resmon.webroot", "twisted.plugins"],
    # The dashboard's static files live in web/ and install as resmon/webroot.
    package_dir={"resmon.webroot": "web"},
    package_data={
        "resmon.bus": ["*.xml", "*.md"],
        "resmon.webroot": ["*", "**/*"],
    },
    install_requires=[
        "twisted[tls]>=22.10",
        "txamqp>=0.8.2",
        "autobahn>=23.1",
        "psutil>=5.9",
        "zope.interface>=5.0",
        "tomli>=1.1; python_version < '3.11'",
        "prometheus_client>=0.16",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-twisted>=1.14", "hypothesis>=6", "selenium>=4.10", "cryptography>=3.4",
                 "tomli>=1.1; python_version < '3.11'", "pika>=1.3", "build>=1.0",
                 "psycopg2-binary>=2.9", "orjson>=3.9", "pytest-xdist>=3.0"],
        # The webhook registry in PostgreSQL (--database postgresql://...).
        "postgresql": ["psycopg2-binary>=2.9"],
        # Faster encoding of the analyses (resmon.wire.encodeBuiltAnalysis).
        "fast": ["orjson>=3.9"],
    },
    entry_points={
        "console_scripts": [
            "resmon-users = resmon.auth.command:main",
            "resmon-provision-agent = resmon.operations.provision:run",
            "resmon-agent = resmon.agentrunner:run",
        ],
        "resmon.analyzers": [
            "usage = resmon.analysis.builtin.usage:UsageAnalyzer",
            "sustained = resmon.analysis.builtin.sustained:SustainedLoadAnalyzer",
            "disk = resmon.analysis.builtin.disk:DiskAnalyzer",
        ],
        "resmon.rules": [
            "alert = resmon.rules.builtin.alert:AlertRule",
        ],
    },
    cmdclass={"build_py": CleanBuildPy},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: System :: Monitoring",
    ],
)
