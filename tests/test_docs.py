"""Every code block in README.md and docs/ runs, or is checked as what it is.

``python`` blocks run as scripts, each in a fresh working directory of its own, as a
reader who pastes one into a file runs it: each must exit 0 and write nothing to stderr.
``yaml`` blocks must parse, and a Prometheus configuration must pass
``promtool check config``.  ``sh`` and ``console`` blocks must parse, and name only files
and extras that exist (``.ci/run`` runs the README's set-up commands themselves).  The new
side of a ``diff`` runs as Python, and ``json`` must parse.  ``text`` is output, not code.
``{doctest}`` blocks are run by Sphinx's doctest builder (``tox -e docs``).  A block of any
other language fails until it has a check here.

A block that needs more than a Python interpreter says so in an HTML comment on the line
before it, which neither GitHub nor Sphinx shows::

    <!-- docs-test: continues -->
        The block adds to the page's previous Python block, as a reader adds to the same
        file; that block runs alone as well.
    <!-- docs-test: serves [URL] [NAME ...] -->
        The block serves metrics until it is stopped.  The test puts a free port wherever
        URL's port number appears in the block (a block without URL prints
        ``Serving metrics at <url>``), scrapes the URL, which must answer the metric
        families NAME ..., and stops the block.
    <!-- docs-test: env NAME=VALUE ... -->
        The block runs with these environment variables.
    <!-- docs-test: tls -->
        ``server.pem``, ``server-key.pem`` and ``clients-ca.pem`` (a CA) are in the block's
        working directory; a served URL is scraped with a client certificate of that CA.
    <!-- docs-test: consul -->
        A fake Consul agent listens at ``CONSUL_HTTP_ADDR``; a serving block must register.
    <!-- docs-test: pushgateway HOST:PORT -->
        A real Pushgateway stands in for HOST:PORT, and must hold a push when the block ends.

Several go in one comment, separated by ``;``.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import dataclasses
import importlib.util
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import urllib.parse
import urllib.request

from importlib.metadata import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from prometheus_client.parser import text_string_to_metric_families

from .peers import LIFETIME, free_port, pushgateway, require_binary, wait_for


if TYPE_CHECKING:
    from collections.abc import Iterator


ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT = 60  # seconds: the longest a block may run, or take to serve

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
MARKER = re.compile(r"^ *<!-- docs-test: (?P<options>.*?) -->\s*$")
OPTIONS = {"continues", "serves", "env", "tls", "consul", "pushgateway"}
CHECKED = {"python", "yaml", "json", "sh", "console", "diff"}
# Directives whose body is not Markdown: Sphinx builds or runs them, with -W.
SPHINX = {"{doctest}", "{eval-rst}", "{include}", "{literalinclude}", "{toctree}"}
# A block importing these runs only where the extra that brings them is installed
# (tox runs the suite without aiohttp and without Twisted, too).
FRAMEWORKS = {
    "aiohttp": "aiohttp",
    "multidict": "aiohttp",
    "promloop.aio.web": "aiohttp",
    "promloop.aio.sd.ConsulAgent": "aiohttp",
    "promloop.aio.push": "aiohttp",
    "promloop.aio.fanin": "aiohttp",
    "twisted": "twisted",
    "promloop.tx": "twisted",
    "klein": "klein",
}


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced code block, and what its marker says it needs."""

    page: Path
    line: int
    language: str
    text: str
    options: dict[str, tuple[str, ...]]
    previous: Block | None  # the page's previous Python block

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    def program(self) -> str:
        """Return the Python that a reader following the page has in their file."""
        if "continues" in self.options:
            assert self.previous is not None, f"{self.where}: nothing before it to continue"
            return f"{self.previous.program()}\n\n{self.text}"
        return self.text


class PageReader:
    """Read a page's fenced blocks, and the markers above them."""

    def __init__(self, page: Path) -> None:
        self.page = page
        self.lines = page.read_text(encoding="utf-8").splitlines()
        self.number = 0  # of the line read last, from 1
        self.blocks: list[Block] = []
        self.problems: list[str] = []
        self.marker: tuple[int, dict[str, tuple[str, ...]]] | None = None
        self.open_directives: list[str] = []  # fences of directives holding Markdown: {note}
        self.previous_python: Block | None = None

    def read(self) -> PageReader:
        while self.number < len(self.lines):
            line = self.lines[self.number]
            self.number += 1
            if self.open_directives and re.fullmatch(rf" *{self.open_directives[-1]} *", line):
                self.open_directives.pop()
            elif found := MARKER.match(line):
                self.expect_no_marker()
                self.marker = (self.number, parse_options(found["options"]))
            elif fence := FENCE.match(line):
                self.read_fence(fence)
            elif line.strip():
                self.expect_no_marker()
        self.expect_no_marker()
        return self

    def expect_no_marker(self) -> None:
        if self.marker is not None:
            self.problems.append(f"{self.page.name}:{self.marker[0]}: no block right below")
            self.marker = None

    def read_fence(self, fence: re.Match[str]) -> None:
        info = fence["info"].split()
        language = info[0] if info else ""
        if language in ("{code-block}", "{code}", "{sourcecode}"):
            language = info[1] if len(info) > 1 else ""
        if language.startswith("{") and language not in SPHINX:
            self.open_directives.append(fence["fence"])
            self.expect_no_marker()
            return
        first = self.number + 1
        closing = re.compile(rf" *{fence['fence'][0]}{{{len(fence['fence'])},}} *")
        body: list[str] = []
        while self.number < len(self.lines) and not closing.fullmatch(self.lines[self.number]):
            body.append(self.lines[self.number].removeprefix(fence["indent"]))
            self.number += 1
        self.number += 1
        block = Block(
            page=self.page,
            line=first - 1,
            language=language,
            text="\n".join(body) + "\n",
            options=self.marker[1] if self.marker else {},
            previous=self.previous_python,
        )
        self.marker = None
        self.blocks.append(block)
        if language == "python":
            self.previous_python = block


def parse_options(text: str) -> dict[str, tuple[str, ...]]:
    options: dict[str, tuple[str, ...]] = {}
    for option in text.split(";"):
        name, *arguments = option.split()
        options[name] = tuple(arguments)
    return options


BLOCKS: list[Block] = []
MARKER_PROBLEMS: list[str] = []
for _reader in (PageReader(page).read() for page in PAGES):
    BLOCKS.extend(_reader.blocks)
    MARKER_PROBLEMS.extend(_reader.problems)


def blocks(*languages: str) -> list[object]:
    """Parameters for the blocks in *languages*, named by where they are."""
    return [
        pytest.param(
            block,
            id=block.where,
            marks=[pytest.mark.e2e] if block.options.keys() & {"serves", "pushgateway"} else [],
        )
        for block in BLOCKS
        if block.language in languages
    ]


def skip_without_frameworks(program: str) -> None:
    """Skip when the program imports a framework whose extra is not installed."""
    imported: set[str] = set()
    for node in ast.walk(ast.parse(program)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    for name in imported:
        for module, extra in FRAMEWORKS.items():
            if (name == module or name.startswith(f"{module}.")) and not importlib.util.find_spec(
                extra
            ):
                pytest.skip(f"needs {extra}, which is not installed here")


def run_python(program: str, directory: Path, env: dict[str, str]) -> str:
    """Run *program* as a script in *directory*; fail unless it exits 0, silently; return stdout."""
    script = directory / "block.py"
    script.write_text(program)
    result = subprocess.run(
        [sys.executable, script.name],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=TIMEOUT,
    )
    output = f"stderr:\n{result.stderr}\nstdout:\n{result.stdout}"
    assert (0, "") == (result.returncode, result.stderr), output
    return result.stdout


def scrape(url: str, context: ssl.SSLContext | None) -> set[str]:
    """Return the names of the families and samples that *url* answers."""
    request = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10, context=context) as response:  # noqa: S310
        assert 200 == response.status
        text = response.read().decode()
    families = list(text_string_to_metric_families(text))
    return {f.name for f in families} | {s.name for f in families for s in f.samples}


@dataclasses.dataclass(frozen=True)
class Served:
    """A serving block's process, and where it serves."""

    url: str
    process: subprocess.Popen[bytes]
    stderr: Path


@contextlib.contextmanager
def serving(block: Block, program: str, directory: Path, env: dict[str, str]) -> Iterator[Served]:
    """Run a serving block until the test is done with it."""
    url, *_ = block.options["serves"] or ("",)
    if url.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(url)
        documented = re.compile(rf"\b{parts.port}\b")
        assert documented.search(program), f"{block.where}: the block never uses {url}'s port"
        port = free_port()
        program = documented.sub(str(port), program)
        url = parts._replace(netloc=f"{parts.hostname}:{port}").geturl()
    else:
        url = ""
    (directory / "block.py").write_text(program)
    stdout, stderr = directory / "stdout.txt", directory / "stderr.txt"
    # Files, not pipes: nobody need read them while the block runs, and an unbuffered
    # stdout shows the announcement as soon as it is printed.
    command = [sys.executable, "block.py"]
    if bound := shutil.which("timeout"):  # it ends the block even if the test run dies
        command = [bound, "--signal=KILL", str(LIFETIME), *command]
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            command,
            cwd=directory,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=err,
        )
    try:

        def announced() -> str | None:
            if process.poll() is not None:
                pytest.fail(f"{block.where} exited without serving:\n{stderr.read_text()}")
            found = re.search(r"Serving metrics at (\S+)", stdout.read_text())
            return found[1] if found else None

        if not url:
            url = wait_for(announced, timeout=TIMEOUT, what=f"{block.where}'s Serving metrics at")
        yield Served(url, process, stderr)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def tls_files(directory: Path) -> Iterator[ssl.SSLContext]:
    """Write the server's certificate, its key and a client CA; yield a client's context."""
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    (directory / "server.pem").write_bytes(b"".join(pem.bytes() for pem in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(directory / "server-key.pem"))
    ca.cert_pem.write_to_path(str(directory / "clients-ca.pem"))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    ca.issue_cert("scraper@example.org").configure_cert(context)
    yield context


class TestBlocksFound:
    def test_pages(self):
        """The README and every page of docs/ are read."""
        assert {"README.md", "index.md", "asyncio.md", "twisted.md", "exposition.md"} <= {
            page.name for page in PAGES
        }

    def test_blocks(self):
        """Blocks of every checked kind are found, so that no check passes vacuously."""
        counts = collections.Counter(block.language for block in BLOCKS)
        readme_python = [b for b in BLOCKS if b.page.name == "README.md" and b.language == "python"]

        assert counts["python"] > 10
        assert readme_python
        assert counts["yaml"] > 0
        assert counts["sh"] > 0
        assert counts["{doctest}"] > 0

    def test_markers(self):
        """Every marker is right above a block, and says only what the checks understand."""
        unknown = [
            f"{block.where}: {name}"
            for block in BLOCKS
            for name in block.options
            if name not in OPTIONS
        ]

        assert [] == MARKER_PROBLEMS + unknown

    def test_languages(self):
        """Every block is in a language that a check here knows, so that none goes unchecked."""
        unchecked = [
            f"{block.where}: ```{block.language}"
            for block in BLOCKS
            if block.language not in {*CHECKED, "text", *SPHINX}
        ]

        assert [] == unchecked


class TestPythonBlocks:
    @pytest.mark.parametrize("block", blocks("python"))
    def test_runs(self, block, tmp_path):
        """The block runs as a script (serving blocks serve), with no output on stderr."""
        program = block.program()
        skip_without_frameworks(program)
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update(setting.split("=", 1) for setting in block.options.get("env", ()))
        with contextlib.ExitStack() as stack:
            client_context = (
                stack.enter_context(tls_files(tmp_path)) if "tls" in block.options else None
            )
            if "consul" in block.options:
                from .fake_consul import FakeConsul

                consul = FakeConsul().start()
                stack.callback(consul.close)
                env["CONSUL_HTTP_ADDR"] = consul.url
            if "pushgateway" in block.options:
                [documented] = block.options["pushgateway"]
                assert documented in program, f"{block.where} never pushes to {documented}"
                gateway = stack.enter_context(pushgateway(tmp_path))
                program = program.replace(documented, gateway.removeprefix("http://"))

            if "serves" in block.options:
                server = stack.enter_context(serving(block, program, tmp_path, env))

                def served() -> set[str]:
                    if server.process.poll() is not None:
                        output = server.stderr.read_text()
                        pytest.fail(
                            f"{block.where} exited with {server.process.returncode}:\n{output}"
                        )
                    return scrape(server.url, client_context)

                names = wait_for(
                    served, timeout=TIMEOUT, what=f"{block.where} to serve {server.url}"
                )
                expected = {n for n in block.options["serves"] if not n.startswith("http")}
                assert expected <= names
                if "consul" in block.options:
                    wait_for(lambda: consul.services, timeout=TIMEOUT, what="a registration")
            else:
                run_python(program, tmp_path, env)

            if "pushgateway" in block.options:
                with urllib.request.urlopen(f"{gateway}/api/v1/metrics", timeout=10) as answer:  # noqa: S310
                    assert json.load(answer)["data"], "nothing was pushed"


class TestDataBlocks:
    @pytest.mark.parametrize("block", blocks("yaml", "json"))
    def test_valid(self, block, tmp_path):
        """The block parses; a Prometheus configuration passes `promtool check config`."""
        if block.language == "json":
            json.loads(block.text)
            return
        document = yaml.safe_load(block.text)
        if not (isinstance(document, dict) and "scrape_configs" in document):
            return
        config = tmp_path / "prometheus.yml"
        config.write_text(block.text)
        command = [require_binary("promtool"), "check", "config", str(config)]
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
        if "field consul_sd_configs not found" in result.stdout + result.stderr:
            # Debian's Prometheus is built without Consul discovery; VictoriaMetrics,
            # which the end-to-end tests scrape Consul's services with, reads the same file.
            binary = require_binary("victoria-metrics")
            command = [binary, f"-promscrape.config={config}", "-promscrape.config.dryRun"]
            command.append("-loggerLevel=ERROR")
            result = subprocess.run(
                command, capture_output=True, text=True, check=False, timeout=60
            )
        assert 0 == result.returncode, result.stdout + result.stderr


class TestShellBlocks:
    @pytest.mark.parametrize("block", blocks("sh", "console"))
    def test_valid(self, block):
        """The commands parse, and the extras and repository files they name exist."""
        if block.language == "console":
            commands = "\n".join(
                line.removeprefix("$ ") for line in block.text.splitlines() if line.startswith("$ ")
            )
        else:
            commands = block.text
        extras = set(metadata("promloop").get_all("Provides-Extra") or ())
        named_extras = {
            extra
            for found in re.findall(r"(?:\.|promloop)\[([\w,-]+)\]", commands)
            for extra in found.split(",")
        }
        files = re.findall(
            r"(?<![\w./-])((?:examples|benchmarks|docs|tests|src)/[\w./-]+)", commands
        )

        assert commands.strip()
        result = subprocess.run(
            ["bash", "-n"],  # noqa: S607 -- bash is wherever the suite runs
            input=commands,
            capture_output=True,
            text=True,
            check=False,
        )
        assert "" == result.stderr
        assert set() == named_extras - extras
        assert [] == [name for name in files if not (ROOT / name).exists()]


class TestDiffBlocks:
    @pytest.mark.parametrize("block", blocks("diff"))
    def test_new_side_runs(self, block, tmp_path):
        """Every line is a context, removed or added line, and the added lines run as Python."""
        lines = block.text.splitlines()
        added = "\n".join(line[1:] for line in lines if line.startswith("+"))

        assert [] == [line for line in lines if line[:1] not in ("+", "-", " ")]
        assert added
        skip_without_frameworks(added)
        run_python(added, tmp_path, dict(os.environ))


class TestSupportedPythons:
    def test_declared_tested_documented(self):
        """The classifiers, tox's test matrix and the installation page name the same versions."""
        classifiers = metadata("promloop").get_all("Classifier") or ()
        declared = {c.rsplit(" :: ", 1)[1] for c in classifiers if re.fullmatch(r".* :: 3\.\d+", c)}
        env_list = (ROOT / "tox.ini").read_text().split("env_list =", 1)[1]
        [minors] = re.findall(r"py3\{([\d,]+)\}", env_list)
        tested = {f"3.{minor}" for minor in minors.split(",")}
        installation = (ROOT / "docs" / "installation.md").read_text()
        [sentence] = [line for line in installation.splitlines() if "test suite runs on" in line]
        documented = set(re.findall(r"3\.\d+", sentence))

        assert tested == declared
        assert tested == documented


class TestCitations:
    def test_no_outside_file(self):
        """Code, tests and docs cite the docs, never the specification outside this repository."""
        # [P]: so that this file does not cite it itself.
        citation = re.compile(r"\bS[P]EC\b")
        texts = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "tox.ini", ROOT / ".ci" / "run"]
        for directory in ("src", "tests", "docs", "benchmarks", "examples"):
            texts.extend(
                path
                for path in (ROOT / directory).rglob("*")
                if path.suffix in {".py", ".md", ".txt", ".yml", ".toml", ".ini"}
                and "_build" not in path.parts
            )

        assert [] == [
            f"{path.relative_to(ROOT)}:{number}"
            for path in texts
            if path.exists()
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if citation.search(line)
        ]
