"""The `[http]` section: the dashboard serves loopback only unless allowed by name."""

import pytest

from overhop.config import Config, ConfigError, validate_config
from overhop.config.schema import is_loopback
from overhop.config.sections import HttpConfig


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost"])
def test_loopback_hosts_are_accepted(host: str) -> None:
    assert is_loopback(host)
    validate_config(Config(http=HttpConfig(host=host)))


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "::", "example.com", "dashboard"])
def test_other_hosts_are_refused_unless_allowed(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(ConfigError, match=r"http\.allow_non_loopback"):
        validate_config(Config(http=HttpConfig(host=host)))
    validate_config(Config(http=HttpConfig(host=host, allow_non_loopback=True)))
    validate_config(Config(http=HttpConfig(host=host, enabled=False)))


def test_defaults() -> None:
    http = Config().http
    assert (http.enabled, http.host, http.port, http.read_only) == (True, "127.0.0.1", 9877,
                                                                    False)
