"""Errors raised by ragzip. Every message names the problem and the fix."""

from __future__ import annotations


class RagzipError(Exception):
    """Base class of every error ragzip raises on purpose."""


class ConfigError(RagzipError, ValueError):
    """A YAML file or config dict is malformed, has an unknown key or a bad value."""


class InputError(RagzipError, ValueError):
    """A query or passage given to ragzip cannot be processed as it is."""


class ModelNotFoundError(RagzipError, FileNotFoundError):
    """A model spec (``embedded:``, HF id or local path) cannot be resolved offline."""


class IndexCorruptError(RagzipError, ValueError):
    """A saved FAISS index or its metadata is unreadable or inconsistent."""


class SoftTokenError(RagzipError, RuntimeError):
    """Soft tokens reached a generator that cannot read them, or do not fit it."""


class MissingDependencyError(RagzipError, ImportError):
    """An optional dependency is not installed; the message gives the pip extra."""
