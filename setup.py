from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="resmon",
    version="0.1.0",
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
                 "tomli>=1.1; python_version < '3.11'", "pika>=1.3"],
    },
    entry_points={
        "resmon.analyzers": [
            "usage = resmon.analysis.builtin.usage:UsageAnalyzer",
            "sustained = resmon.analysis.builtin.sustained:SustainedLoadAnalyzer",
            "disk = resmon.analysis.builtin.disk:DiskAnalyzer",
        ],
        "resmon.rules": [
            "alert = resmon.rules.builtin.alert:AlertRule",
        ],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: System :: Monitoring",
    ],
)
