"""tidlc-example-plugin: a complete third-party tidlc plugin (see README.md).

The one line that makes it a plugin is the ``tidlc`` entry point: tidlc
registers the module it names under the entry-point name (``-p no:example``
blocks it).
"""
from setuptools import setup

setup(
    name="tidlc-example-plugin",
    version="0.1.0",
    description="Example tidlc plugin: Darknet .cfg frontend, swish op, decompose-swish pass, pass log",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=["tidlc_example_plugin"],
    install_requires=["tidlc", "numpy"],
    entry_points={"tidlc": ["example = tidlc_example_plugin"]},
    zip_safe=False,
)
