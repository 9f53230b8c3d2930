"""The end-to-end tests' peers: a missing one names the Debian package that installs it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from .peers import DEBIAN_PACKAGES, require_binary


BINARIES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-pushgateway": "prometheus-pushgateway",
    "victoria-metrics": "victoria-metrics",
}


@pytest.fixture
def nothing_installed(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))


class TestRequireBinary:
    @pytest.mark.parametrize(("binary", "package"), BINARIES.items())
    def test_skip_names_the_package(self, binary, package, nothing_installed, monkeypatch):
        """On a developer's machine, a missing binary skips, naming the package to install."""
        monkeypatch.delenv("CI", raising=False)
        monkeypatch.delenv("PROMLOOP_REQUIRE_PEERS", raising=False)

        with pytest.raises(pytest.skip.Exception) as skipped:
            require_binary(binary)

        assert f"{binary} is not installed (Debian: apt-get install {package})" == skipped.value.msg

    def test_ci_fails(self, nothing_installed, monkeypatch):
        """In CI, a missing binary fails the test instead, with the same advice."""
        monkeypatch.setenv("CI", "true")

        with pytest.raises(pytest.fail.Exception, match=r"apt-get install prometheus\); CI"):
            require_binary("promtool")

    @pytest.mark.parametrize("binary", BINARIES)
    def test_package_owns_the_binary(self, binary):
        """Where dpkg installed the binary, it came from the package that the advice names."""
        dpkg, path = shutil.which("dpkg"), shutil.which(binary)
        if dpkg is None or path is None:
            pytest.skip(f"no dpkg, or no {binary}, to ask")
        owner = subprocess.run(
            [dpkg, "-S", os.path.realpath(path)], capture_output=True, text=True, check=False
        )
        if owner.returncode:
            pytest.skip(f"{path} is not from a Debian package")

        assert DEBIAN_PACKAGES.get(binary, binary) == owner.stdout.split(":", 1)[0]
