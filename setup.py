"""Metadata lives in setup.cfg; this file only declares the C extensions (built by `pip install -e .`)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "app._spawn",
            ["app/_spawn.c", "app/spawner.c"],
            depends=["app/spawner.h"],
            extra_compile_args=["-O2", "-pthread", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            extra_link_args=["-pthread"],
        ),
        Extension(
            "app._jsonescape",
            ["app/_jsonescape.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
    ],
)
