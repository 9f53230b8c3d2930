"""The templates of the commonest wrappers, compiled for every shape of parameters."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from promloop import aio
from promloop._templates import COROUTINE_FUNCTION_TEMPLATES, FUNCTION_TEMPLATES
from promloop._templating import parameters, specialize

from .conftest import FakeCounter, FakeGauge, FakeObserver


TEMPLATES = [
    pytest.param(template, id=template.__name__)
    for table in (COROUTINE_FUNCTION_TEMPLATES, FUNCTION_TEMPLATES)
    for template in table.values()
]

# One function of each shape of parameters: each returns what it was given.
SHAPES = {
    "none": lambda: (),
    "positional": lambda a, b: (a, b),
    "default": lambda a, b=2: (a, b),
    "positional-only": lambda a, b=2, /, c=3: (a, b, c),
    "varargs": lambda a, *rest: (a, rest),
    "keyword-only": lambda *, c, d=4: (c, d),
    "varargs and keyword-only": lambda *rest, c=3: (rest, c),
    "varkw": lambda a, **options: (a, options),
    "everything": lambda a, b=2, /, c=3, *rest, d, e=5, **options: (a, b, c, rest, d, e, options),
}

CALLS = {
    "none": ((), {}),
    "positional": ((1,), {"b": 2}),
    "default": ((1,), {}),
    "positional-only": ((1,), {"c": 30}),
    "varargs": ((1, 2, 3), {}),
    "keyword-only": ((), {"c": 3}),
    "varargs and keyword-only": ((1, 2), {}),
    "varkw": ((1,), {"x": 2}),
    "everything": ((1, 2, 3, 4), {"d": 4, "z": 26}),
}

WRAPPERS = {
    "time": (aio.time, FakeObserver),
    "count_exceptions": (aio.count_exceptions, FakeCounter),
    "track_inprogress": (aio.track_inprogress, FakeGauge),
}


def as_coroutine_function(func):
    """Return an async def function with exactly *func*'s parameters, returning what it does."""
    source = f"async def work({parameters(func)[0]}):\n    return func({parameters(func)[1]})\n"
    scope = {}
    exec(source, {"func": func}, scope)  # noqa: S102 -- the test's own source
    work = scope["work"]
    work.__defaults__, work.__kwdefaults__ = func.__defaults__, func.__kwdefaults__
    return work


class TestSpecialize:
    @pytest.mark.parametrize("shape", SHAPES)
    @pytest.mark.parametrize("template", TEMPLATES)
    def test_every_template_and_shape(self, template, shape):
        """Every template compiles with every shape of parameters, which it passes on exactly."""
        func = SHAPES[shape]
        specialized = specialize(template, func)

        assert template is not specialized
        assert template.__name__ == specialized.__name__
        source = inspect.getsource(specialized)
        assert f"measured({parameters(func)[0]})" in source
        assert f"func({parameters(func)[1]})" in source

    @pytest.mark.parametrize("shape", SHAPES)
    @pytest.mark.parametrize("wrapper", WRAPPERS)
    def test_wrappers_take_the_exact_parameters(self, wrapper, shape):
        """A decorated function's wrapper has its parameters, and passes every call on as is."""
        decorate, fake = WRAPPERS[wrapper]
        func = SHAPES[shape]
        work = as_coroutine_function(func)
        args, kwargs = CALLS[shape]

        plain = decorate(fake())(func)
        coroutine_function = decorate(fake())(work)

        assert func(*args, **kwargs) == plain(*args, **kwargs)
        assert func(*args, **kwargs) == asyncio.run(coroutine_function(*args, **kwargs))
        for decorated, original in ((plain, func), (coroutine_function, work)):
            assert inspect.signature(original) == inspect.signature(decorated, follow_wrapped=False)
            assert f"({parameters(original)[0]})" in inspect.getsource(decorated.__code__)

    def test_defaults_are_the_functions_own(self):
        """A default value is the wrapped function's own object, not a copy."""
        marker = object()

        def identity(value=marker):
            return value

        assert marker is aio.time(FakeObserver())(identity)()

    @pytest.mark.parametrize("name", ["func", "metric", "started", "result", "isinstance"])
    def test_names_the_template_uses(self, name):
        """A parameter named like something the template uses keeps the generic wrapper."""
        scope = {}
        exec(f"def work({name}):\n    return {name}\n", scope)  # noqa: S102 -- the test's own source

        decorated = aio.time(FakeObserver())(scope["work"])

        assert 7 == decorated(7)
        assert "(*args, **kwargs)" in str(inspect.signature(decorated, follow_wrapped=False))

    def test_other_callables_keep_the_template(self):
        """Only a Python function is specialized: anything else gets the template as it is."""
        template = COROUTINE_FUNCTION_TEMPLATES[next(iter(COROUTINE_FUNCTION_TEMPLATES))]

        assert template is specialize(template, print)

    @pytest.mark.parametrize("template", TEMPLATES)
    def test_template_spots(self, template):
        """Each template has one def line and one call to specialize, and nothing else of them."""
        source = inspect.getsource(template)
        definition, call = "measured(*args: Any, **kwargs: Any)", "func(*args, **kwargs)"

        assert (1, 1) == (source.count(definition), source.count(call))
        assert "args" not in source.replace(definition, "").replace(call, "")
