"""The package's surface: exports, laziness, version, and missing extras."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import warnings

from importlib.metadata import version

import pytest

import promloop
import promloop.aio
import promloop.aio.sd
import promloop.types


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )


class TestExports:
    @pytest.mark.parametrize(
        ("module", "expected"),
        [
            (promloop, ["BasicAuth", "BearerToken", "__version__", "aio"]),
            (
                promloop.aio,
                [
                    "EventLoopMonitor",
                    "count_exceptions",
                    "monitor_event_loop",
                    "time",
                    "track_inprogress",
                ],
            ),
            (
                promloop.types,
                [
                    "Deregisterer",
                    "ExceptionTypes",
                    "ExemplarFactory",
                    "InProgressGauge",
                    "IncDecrementer",
                    "Incrementer",
                    "LabelsFactory",
                    "ListeningAddress",
                    "MetricsServer",
                    "Observer",
                    "ParamSpec",
                    "ServiceDiscovery",
                ],
            ),
        ],
        ids=lambda value: getattr(value, "__name__", "names"),
    )
    def test_all(self, module, expected):
        """Each public module's __all__ is sorted and lists exactly its public names."""
        assert expected == module.__all__
        assert sorted(module.__all__) == module.__all__
        lazy = {"aio", "tx"} if module is promloop else set()  # tested in TestLaziness
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            for name in set(module.__all__) - lazy:
                assert getattr(module, name) is not None

    def test_tx_all(self):
        """promloop.tx exports the three wrappers."""
        tx = pytest.importorskip("promloop.tx")

        assert [
            "ReactorMonitor",
            "count_exceptions",
            "monitor_reactor",
            "time",
            "track_inprogress",
        ] == tx.__all__

    def test_aio_web_all(self):
        """promloop.aio.web exports its handlers, servers and their types."""
        web = pytest.importorskip("promloop.aio.web")

        assert [
            "MetricsHTTPServer",
            "Socket",
            "ThreadedMetricsHTTPServer",
            "make_handler",
            "metrics_middleware",
            "server_stats",
            "start_http_server",
            "start_http_server_in_thread",
        ] == web.__all__
        for name in web.__all__:
            assert getattr(web, name).__doc__

    def test_aio_sd_all(self):
        """promloop.aio.sd exports its two registrars."""
        sd = pytest.importorskip("promloop.aio.sd")

        assert ["ConsulAgent", "FileSD"] == sd.__all__

    def test_aio_fanin_all(self):
        """promloop.aio.fanin exports the fan-in's two ways to start, and its process."""
        fanin = pytest.importorskip("promloop.aio.fanin")

        assert ["FanInProcess", "start_fanin", "start_fanin_in_process"] == fanin.__all__
        for name in fanin.__all__:
            assert getattr(fanin, name).__doc__

    def test_aio_push_all(self):
        """promloop.aio.push exports the three Pushgateway calls and their error."""
        push = pytest.importorskip("promloop.aio.push")

        assert [
            "PushgatewayError",
            "delete_from_gateway",
            "push_to_gateway",
            "pushadd_to_gateway",
        ] == push.__all__

    def test_tx_web_all(self):
        """promloop.tx.web exports MetricsResource."""
        web = pytest.importorskip("promloop.tx.web")

        assert ["MetricsResource"] == web.__all__

    def test_prometheus_async_names(self):
        """Every name prometheus_async.types offers exists in promloop.types."""
        for name in ("P", "R", "T", "C", "Deregisterer", "Incrementer", "Observer", "ParamSpec"):
            assert hasattr(promloop.types, name)

    def test_twisted_type_variables(self):
        """D and F (bound to Deferred and Failure) load Twisted only when asked for."""
        pytest.importorskip("twisted")

        assert "D" == promloop.types.D.__name__
        assert "F" == promloop.types.F.__name__

    def test_unknown_attributes(self):
        """Unknown attributes raise AttributeError naming the module."""
        for module in (promloop, promloop.aio, promloop.aio.sd, promloop.types):
            with pytest.raises(
                AttributeError, match=f"module '{module.__name__}' has no attribute 'nope'"
            ):
                _ = module.nope

    def test_dir(self):
        """dir(promloop) lists the lazily loaded subpackages."""
        assert {"aio", "tx", "__version__"} <= set(dir(promloop))


class TestIncDecrementer:
    def test_deprecated_alias(self):
        """IncDecrementer still works, with a DeprecationWarning naming its replacement."""
        with pytest.warns(DeprecationWarning, match="use promloop.types.InProgressGauge"):
            alias = promloop.types.IncDecrementer

        assert promloop.types.InProgressGauge is alias


class TestVersion:
    def test_from_metadata(self):
        """__version__ is the installed distribution's version."""
        assert version("promloop") == promloop.__version__


class TestLaziness:
    def test_import_is_cheap(self):
        """Import promloop (and promloop.types) loads neither aiohttp nor Twisted."""
        result = run_python(
            "import sys, promloop, promloop.types;"
            "print(sorted(m for m in ('aiohttp', 'twisted') if m in sys.modules))"
        )

        assert "[]" == result.stdout.strip(), result.stderr

    def test_aio_loads_no_twisted(self):
        """Import promloop.aio leaves Twisted alone."""
        result = run_python("import sys, promloop.aio; print('twisted' in sys.modules)")

        assert "False" == result.stdout.strip(), result.stderr

    def test_subpackages_load_on_access(self):
        """promloop.aio loads on first attribute access."""
        result = run_python("import promloop; print(promloop.aio.time.__module__)")

        assert "promloop.aio._decorators" == result.stdout.strip(), result.stderr


class TestAioSubmodules:
    def test_there_from_the_start(self):
        """With aiohttp, `from promloop import aio` suffices for aio.web, as in prometheus-async."""
        pytest.importorskip("aiohttp")
        result = run_python(
            "from promloop import aio;"
            "print(aio.web.start_http_server.__name__, aio.fanin.start_fanin.__name__,"
            " aio.push.push_to_gateway.__name__, aio.sd.FileSD.__name__)"
        )

        assert "start_http_server start_fanin push_to_gateway FileSD" == result.stdout.strip(), (
            result.stderr
        )

    def test_no_module_getattr(self):
        """With aiohttp installed, promloop.aio has no module __getattr__.

        CPython does not specialise attribute lookups on a module that has one,
        and ``aio.time(metric, coroutine)`` would pay for that at every call.
        """
        pytest.importorskip("aiohttp")

        assert "__getattr__" not in vars(promloop.aio)

    @pytest.fixture
    def aio_without_aiohttp(self, monkeypatch):
        """promloop.aio run again as if aiohttp were not installed; restored afterwards."""
        namespace = vars(promloop.aio)
        saved = dict(namespace)
        monkeypatch.setitem(sys.modules, "aiohttp", None)
        for name in ("fanin", "push", "web"):
            namespace.pop(name, None)
            monkeypatch.delitem(sys.modules, f"promloop.aio.{name}", raising=False)
        try:
            yield importlib.reload(promloop.aio)
        finally:
            namespace.clear()
            namespace.update(saved)

    def test_without_aiohttp(self, aio_without_aiohttp):
        """Without aiohttp, aio.sd still works, and aio.web names the extra to install."""
        aio = aio_without_aiohttp

        assert promloop.aio.sd is aio.sd
        for name in ("fanin", "push", "web"):
            with pytest.raises(ModuleNotFoundError, match=r"pip install 'promloop\[aiohttp\]'"):
                getattr(aio, name)
        with pytest.raises(AttributeError, match=r"module 'promloop\.aio' has no attribute 'nope'"):
            _ = aio.nope


class TestMissingExtras:
    @pytest.mark.parametrize(
        ("code", "blocked"),
        [
            ("import promloop.tx", "twisted"),
            ("import promloop; promloop.tx", "twisted"),
            ("import promloop.types; promloop.types.D", "twisted"),
            ("import promloop.tx.web", "twisted"),
            ("import promloop.aio.web", "aiohttp"),
            ("import promloop; promloop.aio.web", "aiohttp"),
            ("from promloop.aio.sd import ConsulAgent", "aiohttp"),
            ("import promloop.aio.sd; promloop.aio.sd.ConsulAgent", "aiohttp"),
            ("import promloop.aio.push", "aiohttp"),
            ("import promloop.aio.fanin", "aiohttp"),
        ],
    )
    def test_import_error_names_extra(self, code, blocked):
        """Without the framework, the ImportError says which extra to install."""
        result = run_python(f"import sys; sys.modules[{blocked!r}] = None\n{code}")

        assert 0 != result.returncode
        assert "ModuleNotFoundError: " in result.stderr
        extra = "consul" if "sd" in code else blocked
        assert f"pip install 'promloop[{extra}]'" in result.stderr

    def test_file_sd_needs_no_framework(self):
        """FileSD is plain file I/O: it imports without aiohttp, and loads neither framework."""
        result = run_python(
            "import sys; sys.modules['aiohttp'] = None\n"
            "from promloop.aio.sd import FileSD\n"
            "print(FileSD.__name__, [m for m in ('aiohttp', 'twisted') if sys.modules.get(m)])"
        )

        assert "FileSD []" == result.stdout.strip(), result.stderr

    def test_import_extra(self, monkeypatch):
        """import_extra's message names the package, the extra and who needs it."""
        from promloop._optional import import_extra

        monkeypatch.setitem(sys.modules, "aiohttp", None)

        with pytest.raises(ImportError) as info:
            import_extra("aiohttp", "aiohttp", needed_by="promloop.aio.web")

        expected = (
            "promloop.aio.web needs aiohttp, which is not installed: "
            "pip install 'promloop[aiohttp]'"
        )
        assert expected == str(info.value)

    def test_import_extra_broken(self, monkeypatch, tmp_path):
        """An installed package that fails to import is not called missing: its error is given."""
        from promloop._optional import import_extra

        (tmp_path / "brokenpkg.py").write_text("import no_such_dependency_of_brokenpkg\n")
        monkeypatch.syspath_prepend(str(tmp_path))

        with pytest.raises(ImportError) as info:
            import_extra("brokenpkg", "aiohttp", needed_by="promloop.aio.web")

        expected = (
            "promloop.aio.web needs brokenpkg, which could not be imported "
            "(No module named 'no_such_dependency_of_brokenpkg'): pip install 'promloop[aiohttp]'"
        )
        assert expected == str(info.value)
        assert "no_such_dependency_of_brokenpkg" == info.value.name

    @pytest.mark.parametrize(
        "setup",
        [
            "sys.modules['multidict'] = None",  # aiohttp installed, a dependency of it broken
            "sys.modules['aiohttp'] = types.ModuleType('aiohttp')",  # a test's stand-in
        ],
    )
    def test_wrappers_survive_a_broken_aiohttp(self, setup):
        """An aiohttp that cannot be imported leaves the wrappers usable; aio.web says why."""
        pytest.importorskip("aiohttp")
        result = run_python(
            f"import sys, types; {setup}\n"
            "from promloop import aio\n"
            "print(aio.time.__name__, aio.sd.FileSD.__name__)\n"
            "aio.web\n"
        )

        assert "time FileSD" == result.stdout.strip(), result.stderr
        last_line = result.stderr.strip().splitlines()[-1]
        assert re.match(r"(ModuleNotFound|Import)Error: .*aiohttp", last_line), last_line
