"""Sphinx configuration for promloop's documentation.

Build with ``tox -e docs``: HTML and doctests, nitpicky, warnings as errors.
"""

from __future__ import annotations

import doctest

from importlib.metadata import version as _version


project = "promloop"
author = "The promloop developers"
copyright = f"2026, {author}"

release = _version("promloop")
# The short X.Y version.
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

nitpicky = True

# -- MyST ----------------------------------------------------------------------

myst_enable_extensions = ["colon_fence", "deflist"]

# -- autodoc and napoleon ------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_preserve_defaults = True
# Names that annotations use without their module (imported for type checking only).
autodoc_type_aliases = {"MetricsHTTPServer": "promloop.aio.web.MetricsHTTPServer"}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# -- doctest -------------------------------------------------------------------

# Exception messages are part of the documented behaviour, so unlike Sphinx's
# default, IGNORE_EXCEPTION_DETAIL is off: a doctest checks the whole message.
doctest_default_flags = doctest.ELLIPSIS | doctest.DONT_ACCEPT_TRUE_FOR_1
# Plain ">>>" blocks are examples for reading; only {doctest} blocks run.
doctest_test_doctest_blocks = ""

# -- cross-references ----------------------------------------------------------

# The docs build offline (no intersphinx), so references to other projects'
# objects cannot resolve; each one that the docstrings or signatures make is
# listed here, with where it comes from.
nitpick_ignore = [
    # aiohttp, the standard library's ssl and twisted.web, in promloop.aio.web's
    # and promloop.tx.web's signatures.
    ("py:class", "aiohttp.web_request.Request"),
    ("py:class", "aiohttp.web_response.Response"),
    ("py:class", "aiohttp.web_response.StreamResponse"),
    ("py:class", "Middleware"),
    ("py:class", "web.Request"),
    ("py:class", "web.Response"),
    ("py:class", "ssl.SSLContext"),
    ("py:class", "os.PathLike"),
    ("py:exc", "aiohttp.ClientError"),
    ("py:class", "Request"),
    # Python's standard library: the aliases LabelsFactory, ExemplarFactory and
    # Deregisterer expand to these, and the type variables R and C are bound
    # to two of them.
    ("py:class", "collections.abc.Awaitable"),
    ("py:class", "collections.abc.Callable"),
    ("py:class", "collections.abc.Mapping"),
    ("py:class", "collections.abc.Sequence"),
    # promloop.aio.count_exceptions()'s docstring names asyncio's cancellation.
    ("py:class", "asyncio.CancelledError"),
    # prometheus_client: the registry that start_fanin() puts its own metrics in.
    ("py:class", "CollectorRegistry"),
    # Twisted: promloop.tx's signatures say Deferred[T], and its docstrings
    # name the CancelledError that Deferred.cancel() fails with.
    ("py:class", "Deferred"),
    ("py:class", "twisted.internet.defer.CancelledError"),
]

# -- HTML ----------------------------------------------------------------------

html_theme = "furo"
html_title = f"promloop {release}"
