"""Give a template the exact parameters of the Python function it wraps.

A template's wrapper (:mod:`promloop._templates`) takes ``*args, **kwargs``
and calls ``func(*args, **kwargs)``: every call packs its arguments into a
tuple and a dict, and unpacks them again.  For a plain Python function,
:func:`specialize` compiles the template once more with that function's own
parameter list in the wrapper's ``def`` line and the matching arguments in the
call -- the two places where ``*args, **kwargs`` appear -- as one would write
the wrapper by hand for that function.  ``benchmarks/bench_wrappers.py``
shows what it saves: about a tenth of a decorated coroutine's overhead.

Nothing else changes: the specialized source is the template's own source, as
:func:`inspect.getsource` shows it (the wrapper's code object leads there), and
tracebacks through the wrapper show its lines.  A default value stays the
wrapped function's own object, read from its ``__defaults__`` and
``__kwdefaults__`` when the wrapper is made.  A function whose parameter
names would shadow a name that the template uses, or a template whose source
cannot be read (a frozen or zipped install), gets the template as it is.
"""

from __future__ import annotations
import __future__

import functools
import hashlib
import inspect
import linecache
import textwrap
import types

from typing import TYPE_CHECKING, Any, Final


if TYPE_CHECKING:
    from ._templates import Template


# The two places of a template that a specialization changes.
_DEF: Final = "measured(*args: Any, **kwargs: Any)"
_CALL: Final = "func(*args, **kwargs)"


class _Source:
    """A template's source, and the names its wrapper uses."""

    __slots__ = ("reserved", "text")

    def __init__(self, template: Template) -> None:
        self.text = textwrap.dedent(inspect.getsource(template))
        (wrapper,) = (c for c in template.__code__.co_consts if isinstance(c, types.CodeType))
        self.reserved = frozenset(
            wrapper.co_varnames + wrapper.co_freevars + wrapper.co_cellvars + wrapper.co_names
        ) - {"args", "kwargs"}


@functools.cache
def _source_of(template: Template) -> _Source | None:
    try:
        return _Source(template)
    except OSError:  # pragma: no cover -- installed without its sources
        return None


def parameters(func: types.FunctionType) -> tuple[str, str]:
    """Return *func*'s parameter list, as a ``def`` line spells it, and the call passing them on.

    Defaults are spelt as reads of ``func.__defaults__`` and
    ``func.__kwdefaults__``, so that the same source serves every function of
    the same shape.
    """
    code = func.__code__
    names = code.co_varnames
    positional = names[: code.co_argcount]
    keyword_only = names[code.co_argcount : code.co_argcount + code.co_kwonlyargcount]
    rest = names[code.co_argcount + code.co_kwonlyargcount :]
    has_varargs = bool(code.co_flags & inspect.CO_VARARGS)
    has_varkw = bool(code.co_flags & inspect.CO_VARKEYWORDS)
    first_default = len(positional) - len(func.__defaults__ or ())
    kwdefaults = func.__kwdefaults__ or {}

    declared: list[str] = []
    passed: list[str] = []
    for index, name in enumerate(positional):
        if index >= first_default:
            declared.append(f"{name}=func.__defaults__[{index - first_default}]")
        else:
            declared.append(name)
        passed.append(name)
        if index + 1 == code.co_posonlyargcount:
            declared.append("/")
    if has_varargs:
        declared.append(f"*{rest[0]}")
        passed.append(f"*{rest[0]}")
    elif keyword_only:
        declared.append("*")
    for name in keyword_only:
        declared.append(f"{name}=func.__kwdefaults__[{name!r}]" if name in kwdefaults else name)
        passed.append(f"{name}={name}")
    if has_varkw:
        declared.append(f"**{rest[int(has_varargs)]}")
        passed.append(f"**{rest[int(has_varargs)]}")
    return ", ".join(declared), ", ".join(passed)


def specialize(template: Template, func: object) -> Template:
    """Return *template* compiled with *func*'s exact parameters, or *template* as it is.

    Only a plain Python function is specialized; see the module docstring.
    """
    if type(func) is not types.FunctionType:
        return template
    source = _source_of(template)
    if source is None:  # pragma: no cover -- installed without its sources
        return template
    declared, passed = parameters(func)
    if not source.reserved.isdisjoint(func.__code__.co_varnames[: _parameter_count(func)]):
        return template
    key = (template, declared, passed)
    compiled = _specialized.get(key)
    if compiled is None:
        compiled = _specialized[key] = _Compiled(template, source, declared, passed)
    compiled.register_source()
    return compiled.template


def _parameter_count(func: types.FunctionType) -> int:
    code = func.__code__
    flags = code.co_flags
    return (
        code.co_argcount
        + code.co_kwonlyargcount
        + bool(flags & inspect.CO_VARARGS)
        + bool(flags & inspect.CO_VARKEYWORDS)
    )


class _Compiled:
    """One template, compiled for one shape of parameters."""

    __slots__ = ("filename", "lines", "template", "text")

    def __init__(self, template: Template, source: _Source, declared: str, passed: str) -> None:
        self.text = source.text.replace(_DEF, f"measured({declared})").replace(
            _CALL, f"func({passed})"
        )
        digest = hashlib.sha1(self.text.encode()).hexdigest()[:12]  # noqa: S324 -- a name
        self.filename = f"<promloop {template.__name__} {digest}>"
        self.lines = self.text.splitlines(keepends=True)
        # Compiled as its module is, and run in its module's namespace: its
        # annotations stay strings, and its globals are the template's own.
        flags = __future__.annotations.compiler_flag
        code = compile(self.text, self.filename, "exec", flags=flags, dont_inherit=True)
        scope: dict[str, Any] = {}
        exec(code, template.__globals__, scope)  # noqa: S102 -- our own template, see the module docstring
        self.template: Template = scope[template.__name__]

    def register_source(self) -> None:
        # Registered at every use: linecache.clearcache() may have dropped it.
        linecache.cache[self.filename] = (len(self.text), None, self.lines, self.filename)


_specialized: dict[tuple[object, str, str], _Compiled] = {}
