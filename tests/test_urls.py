"""promloop._urls: URLs as promloop shows them (docs/exposition.md, "Credentials")."""

from __future__ import annotations

import pytest

from promloop._urls import shown


class TestShown:
    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("http://127.0.0.1:9091", "http://127.0.0.1:9091"),
            ("https://user:s3cret@gw:9091/x?y#z", "https://user:***@gw:9091/x?y#z"),
            ("http://user@gw", "http://user@gw"),
            ("http://user:p@ss:word@gw", "http://user:***@gw"),
            ("http://:s3cret@gw", "http://:***@gw"),
        ],
    )
    def test_password_hidden(self, url, expected):
        """The password of the user information is hidden; the rest of the URL stays."""
        assert expected == shown(url)
