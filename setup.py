"""Metadata lives in setup.cfg; this file only declares the C extensions (built by `pip install -e .`)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "app.process._spawn",
            ["app/process/_spawn.c", "app/process/spawner.c"],
            depends=["app/process/spawner.h"],
            extra_compile_args=["-O2", "-pthread", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            extra_link_args=["-pthread"],
        ),
        Extension(
            "app.streaming._jsonescape",
            ["app/streaming/_jsonescape.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
    ],
)
