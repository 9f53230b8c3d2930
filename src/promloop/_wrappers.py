"""Turn a :class:`~promloop._probes.Recipe` into wrappers.

A wrapper keeps the kind of what it wraps -- a coroutine function stays a
coroutine function, an async generator function an async generator function,
a generator function a generator function -- so that frameworks which inspect
handlers (aiohttp, pytest, Klein) see what they expect.  Wrappers are plain
closures: bound as methods like any function, and picklable by qualified name.

The hot paths -- a coroutine function, a plain function -- are compiled from
the templates below with the recipe's lines inlined, the way dataclasses and
attrs generate ``__init__``: the wrapper then costs what a hand-written one
does, with no extra call per measurement.  Generators, async generators and
pending results use the compiled ``start``/``stop`` pair instead.

What a plain function returns is handed to a framework-specific *settle*
function when it is of a *pending* type (a coroutine, a Future, a Deferred);
settle measures it until it completes.  Anything else is measured as a plain
value and returned untouched.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import linecache
import sys
import textwrap

from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping
from typing import Any, Final, TypeVar

from ._probes import Args, Kwargs, Recipe


T = TypeVar("T")

Start = Callable[[Args, Kwargs], Any]
Stop = Callable[[Any, Args, Kwargs, "BaseException | None"], None]
Settle = Callable[["Probe", Any, Any, Args, Kwargs], Any]

NOT_STARTED: Final[Any] = object()
"""A token meaning "the measurement has not started yet"."""


class Probe:
    """A compiled recipe: ``start(args, kwargs) -> state`` and ``stop(state, args, kwargs, error)``.

    *namespace* is the decorator module's globals, where the compiled code
    looks up ``perf_counter``.
    """

    __slots__ = ("namespace", "recipe", "start", "starts_with_execution", "stop")

    def __init__(self, recipe: Recipe, namespace: dict[str, Any]) -> None:
        self.recipe = recipe
        self.namespace = namespace
        self.starts_with_execution = recipe.starts_with_execution
        self.start: Start
        self.stop: Stop
        self.start, self.stop = compile_recipe(_PROBE, recipe, namespace)


# --- templates ------------------------------------------------------------------
#
# A line that holds only "{name}" is replaced by that block, indented like it.
# {state} is the recipe's state as one expression; {enter} binds it, and
# {unpack_state} binds it again from a value called "state".  The framework
# sides compile templates of their own with compile_recipe().

_PROBE: Final = """
def start(args, kwargs):
    {enter}
    return {state}

def stop(state, args, kwargs, error):
    {unpack_state}
    if error is None:
        {on_success}
    else:
        {on_error}

return start, stop
"""

_COROUTINE: Final = """
async def measured(*args, **kwargs):
    {enter}
    try:
        result = await func(*args, **kwargs)
    except BaseException as error:
        {on_error}
        raise
    {on_success}
    return result

return measured
"""

_FUNCTION: Final = """
def measured(*args, **kwargs):
    {enter}
    try:
        result = func(*args, **kwargs)
    except BaseException as error:
        {on_error}
        raise
    if isinstance(result, pending):
        return settle(probe, result, {state}, args, kwargs)
    {on_success}
    return result

return measured
"""


def _guarded(lines: tuple[str, ...]) -> tuple[str, ...]:
    """Wrap recording lines so that a failure is reported, not raised."""
    if not lines:
        return ("pass",)
    body = tuple("    " + line for line in lines)
    return ("try:", *body, "except Exception:", "    recording_failed()")


def _state_expression(state: tuple[str, ...]) -> str:
    if not state:
        return "None"
    if len(state) == 1:
        return state[0]
    return f"({', '.join(state)})"


def _render(template: str, blocks: Mapping[str, tuple[str, ...]]) -> str:
    lines: list[str] = []
    for line in textwrap.dedent(template).splitlines():
        name = line.strip()
        if name.startswith("{") and name.endswith("}") and name[1:-1] in blocks:
            indent = line[: len(line) - len(line.lstrip())]
            lines.extend(indent + block_line for block_line in blocks[name[1:-1]])
        else:
            lines.append(line)
    return "\n".join(lines)


def compile_recipe(template: str, recipe: Recipe, namespace: dict[str, Any], **extra: Any) -> Any:
    """Compile *template* filled with *recipe*; return the function it returns.

    The names of the recipe and *extra* become closure variables, and
    *namespace* the globals, exactly as in a hand-written decorator module.
    The compiled factory is cached by everything but those names' values, so
    a one-shot ``time(metric, awaitable)`` costs a call, not a compilation.
    """
    names = {**recipe.names, **extra}
    key = (
        template,
        recipe.enter,
        recipe.state,
        recipe.on_success,
        recipe.on_error,
        tuple(sorted(names)),
        id(namespace),
    )
    factory = _factories.get(key)
    if factory is None:
        factory = _factories[key] = _Factory(template, recipe, namespace, sorted(names))
    factory.register_source()
    return factory.make(**names)


class _Factory:
    """One compiled template: ``make(**names)`` returns what the template returns."""

    __slots__ = ("filename", "lines", "make", "source")

    def __init__(
        self, template: str, recipe: Recipe, namespace: dict[str, Any], names: list[str]
    ) -> None:
        state = _state_expression(recipe.state)
        body = _render(
            template.replace("{state}", state),
            {
                "enter": recipe.enter,
                "unpack_state": (f"{state} = state",) if recipe.state else (),
                "on_success": _guarded(recipe.on_success),
                "on_error": _guarded(recipe.on_error),
            },
        )
        self.source = f"def make({', '.join(names)}):\n{textwrap.indent(body, '    ')}\n"
        digest = hashlib.sha1(self.source.encode()).hexdigest()[:12]  # noqa: S324 -- a name
        self.filename = f"<promloop wrapper {digest}>"
        self.lines = self.source.splitlines(keepends=True)
        scope: dict[str, Any] = {}
        code = compile(self.source, self.filename, "exec")
        exec(code, namespace, scope)  # noqa: S102 -- our own template, see the module docstring
        self.make: Callable[..., Any] = scope["make"]

    def register_source(self) -> None:
        # Tracebacks through a wrapper show its lines; registered on every use
        # because linecache.clearcache() may have dropped them.
        linecache.cache[self.filename] = (len(self.source), None, self.lines, self.filename)


_factories: dict[tuple[object, ...], _Factory] = {}


# --- instrumenting callables ----------------------------------------------------


def instrument(who: str, func: Any, probe: Probe, settle: Settle, pending: tuple[type, ...]) -> Any:
    """Return *func* wrapped so that every call is measured by *probe*.

    ``classmethod`` and ``staticmethod`` objects are unwrapped, instrumented
    and wrapped again, so the decorator works above or below them.  A plain
    function's result of a *pending* type is handed to *settle*.
    """
    if type(func) in (classmethod, staticmethod):
        descriptor: Any = func
        return type(descriptor)(instrument(who, descriptor.__func__, probe, settle, pending))
    if isinstance(func, (classmethod, staticmethod)):  # a proxy (wrapt) around one
        kind = "classmethod" if isinstance(func, classmethod) else "staticmethod"
        msg = (
            f"{who}: {func!r} is a {kind} inside another decorator, which only the class "
            f"can bind; apply this decorator right above or below @{kind} instead."
        )
        raise TypeError(msg)
    if not callable(func):
        msg = f"{who}: only callables can be decorated, not {func!r}."
        raise TypeError(msg)

    if inspect.isasyncgenfunction(func):
        wrapper = _async_generator_wrapper(func, probe)
    elif inspect.iscoroutinefunction(func):
        wrapper = compile_recipe(_COROUTINE, probe.recipe, probe.namespace, func=func)
    elif inspect.isgeneratorfunction(func):
        wrapper = _generator_wrapper(func, probe)
    else:
        wrapper = compile_recipe(
            _FUNCTION,
            probe.recipe,
            probe.namespace,
            func=func,
            probe=probe,
            settle=settle,
            pending=pending,
        )
    return functools.update_wrapper(wrapper, func)


def _generator_wrapper(
    func: Callable[..., Generator[Any, Any, Any]], probe: Probe
) -> Callable[..., Any]:
    start, stop = probe.start, probe.stop

    def measured(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        # A generator's body runs at its first next(): so does the measurement.
        state = start(args, kwargs)
        try:
            result = yield from func(*args, **kwargs)
        except BaseException as error:
            stop(state, args, kwargs, error)
            raise
        stop(state, args, kwargs, None)
        return result

    return measured


def _async_generator_wrapper(
    func: Callable[..., AsyncGenerator[Any, Any]], probe: Probe
) -> Callable[..., Any]:
    start, stop = probe.start, probe.stop

    async def measured(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        state = start(args, kwargs)
        try:
            # There is no "yield from" for async generators: forward every
            # asend(), athrow() and aclose() to the inner generator by hand.
            inner: AsyncGenerator[Any, Any] = func(*args, **kwargs)
            advance: Callable[[Any], Awaitable[Any]] = inner.asend
            value: Any = None
            step = _unhooked_first_step(inner)
            while True:
                try:
                    item = await step
                except StopAsyncIteration:
                    break
                try:
                    value = yield item
                except GeneratorExit:
                    await inner.aclose()
                    raise
                except BaseException as thrown:  # noqa: BLE001 -- forwarded, not handled
                    advance, value = inner.athrow, thrown
                else:
                    advance = inner.asend
                step = advance(value)
        except BaseException as error:
            stop(state, args, kwargs, error)
            raise
        stop(state, args, kwargs, None)

    return measured


def _unhooked_first_step(inner: AsyncGenerator[Any, Any]) -> Awaitable[Any]:
    """Start *inner* without the event loop's async generator hooks seeing it.

    The loop closes every generator its hooks saw when it shuts down, all at
    once; the inner generator is the wrapper's to close (it is, when the
    wrapper is closed), and closing it twice fails with "aclose(): asynchronous
    generator is already running".  The hooks are per thread, and the first
    step is the only moment they apply.
    """
    hooks = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=None, finalizer=None)
    try:
        return inner.asend(None)
    finally:
        sys.set_asyncgen_hooks(*hooks)


# --- pending results -------------------------------------------------------------


async def measure_awaitable(
    probe: Probe, awaitable: Awaitable[T], args: Args, kwargs: Kwargs, state: Any = NOT_STARTED
) -> T:
    """Await *awaitable*, measuring until it completes.

    A *state* of :data:`NOT_STARTED` starts the measurement when this
    coroutine starts running; any other state continues a measurement that
    began earlier (the clock of ``time(metric, awaitable)`` starts at the call).
    """
    if state is NOT_STARTED:
        state = probe.start(args, kwargs)
    try:
        result = await awaitable
    except BaseException as error:
        probe.stop(state, args, kwargs, error)
        raise
    probe.stop(state, args, kwargs, None)
    return result


def follow_awaitable(
    probe: Probe, awaitable: Awaitable[T], state: Any, args: Args, kwargs: Kwargs
) -> Any:
    """Measure the awaitable result of a plain function until it completes.

    Returns a coroutine.  For a probe that ``starts_with_execution`` the call
    is over and is stopped now; the awaitable is measured again only when it
    runs, so a result that nobody awaits leaves no gauge behind.
    """
    if probe.starts_with_execution:
        probe.stop(state, args, kwargs, None)
        state = NOT_STARTED
    return measure_awaitable(probe, awaitable, args, kwargs, state)
