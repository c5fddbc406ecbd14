"""Spectro Cloud Palette registries as code."""

__version__ = "0.1.0"
