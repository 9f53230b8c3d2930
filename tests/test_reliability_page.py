"""docs/reliability.md names every reliability test, so that no figure goes unreported."""

from __future__ import annotations

import ast

from pathlib import Path


ROOT = Path(__file__).parent.parent
PAGE = ROOT / "docs" / "reliability.md"


def reliability_tests() -> list[tuple[str, str, str]]:
    """Return (file, class, test) for every test in tests/reliability/."""
    found = []
    for path in sorted((ROOT / "tests" / "reliability").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                found.extend(
                    (path.name, node.name, method.name)
                    for method in node.body
                    if isinstance(method, ast.FunctionDef) and method.name.startswith("test_")
                )
    return found


class TestReliabilityPage:
    def test_every_test_is_listed(self):
        """Each reliability test's file, class and name appear on the page."""
        page = PAGE.read_text()
        tests = reliability_tests()

        assert len(tests) >= 15
        missing = [
            test for test in tests if not all(part in page for part in (test[0], test[1], test[2]))
        ]
        assert [] == missing
