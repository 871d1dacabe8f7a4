"""Build for tidlc.

The core lives in ``tidlc/``; the plugin folders at the top level install as
sub-packages (``plugins/`` -> ``tidlc.plugins`` ...) so the source tree shows
the architecture while the import namespace stays one package.
"""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
MAPPED = {"plugins": "tidlc.plugins", "frontends": "tidlc.frontends", "backends": "tidlc.backends"}


def _packages():
    packages = find_packages(include=["tidlc", "tidlc.*"])
    package_dir = {"tidlc": "tidlc"}
    for folder, name in MAPPED.items():
        package_dir[name] = folder
        packages.append(name)
        packages += [f"{name}.{sub}" for sub in find_packages(where=folder)]
    return packages, package_dir


def _extensions():
    """Every .pyx under the package folders becomes an extension module."""
    exts = []
    roots = {"tidlc": "tidlc", **MAPPED}
    for folder, name in roots.items():
        for dirpath, _, files in os.walk(os.path.join(HERE, folder)):
            for fname in sorted(files):
                if not fname.endswith(".pyx"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, fname), HERE)
                sub = os.path.relpath(dirpath, os.path.join(HERE, folder))
                parts = [name] + ([] if sub == "." else sub.split(os.sep)) + [fname[:-4]]
                exts.append(Extension(
                    ".".join(parts), [rel], include_dirs=[numpy.get_include()],
                    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                    extra_compile_args=["-O3"]))
    return cythonize(exts, language_level=3, compiler_directives={
        "boundscheck": False, "wraparound": False, "cdivision": True,
        "initializedcheck": False})


packages, package_dir = _packages()

setup(
    name="tidlc",
    version="0.1.0",
    description="Open, pluggable model compiler for TI TDA4 (C7x + MMA)",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=packages,
    package_dir=package_dir,
    package_data={"": ["*.lark", "*.toml", "*.pxd", "*.pyx"]},
    ext_modules=_extensions(),
    install_requires=[
        "numpy>=1.26", "attrs>=23.1", "pluggy>=1.3", "lark>=1.1.9", "onnx>=1.14",
        "protobuf>=4.21", "rich>=13", 'tomli>=2; python_version < "3.11"',
    ],
    extras_require={
        "test": ["pytest>=7.4", "onnxruntime>=1.17", "opencv-python-headless>=4.8,<5", "setuptools>=69", "wheel",
                 "matplotlib>=3.7",
                 # TF/TFLite frontend tests only: tidlc itself reads .pb/.tflite without them
                 "tensorflow-cpu>=2.15", "tflite>=2.10"],
        "plot": ["matplotlib>=3.5"],  # tidlc perf --plot
        "bench": ["onnxruntime>=1.17", "onnxsim>=0.4.36", "openvino>=2024.0", "matplotlib>=3.7", "scikit-image>=0.22",
                  "tensorflow-cpu>=2.15", "tf2onnx>=1.16"],
    },
    entry_points={"console_scripts": ["tidlc = tidlc.cli:main"]},
    zip_safe=False,
)
