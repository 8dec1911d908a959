"""The compiled part of the server: the matching kernel, a small C extension.

Everything else about the package is in pyproject.toml; setuptools builds this with the
machine's C compiler at `pip install` (a release wheel carries it built).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "cleanroom.matching._kernel",
            sources=["cleanroom/matching/_kernel.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra"],
        )
    ]
)
