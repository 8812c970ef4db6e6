"""No SSRF: which webhook URLs are refused, with a 422 naming the url and the fix."""

from __future__ import annotations

import pytest

from railyard.control.webhooks_urls import blocked_reason, check_url
from railyard.errors import SpecError

PUBLIC = "93.184.215.14"


def fake_dns(table: dict[str, list[str]]):
    def resolver(host: str, port: int) -> list[str]:
        if host in table:
            return table[host]
        import ipaddress

        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            raise OSError(f"[Errno -2] Name or service not known: {host}") from None
    return resolver


DNS = fake_dns({"hooks.example.com": [PUBLIC], "rebind.example.com": [PUBLIC, "127.0.0.1"],
                "internal.example.com": ["10.1.2.3"], "meta.example.com": ["169.254.169.254"]})


@pytest.mark.parametrize("url", ["https://hooks.example.com/railyard",
                                 "http://hooks.example.com:8080/x?y=1",
                                 f"https://{PUBLIC}/hook"])
def test_public_http_urls_pass(url):
    assert check_url(url, allowed_hosts=[], resolver=DNS) == url


@pytest.mark.parametrize("url, why", [
    ("file:///etc/passwd", "scheme 'file'"),
    ("gopher://hooks.example.com/", "scheme 'gopher'"),
    ("hooks.example.com/x", "scheme '(none)'"),
    ("http:///path-only", "no host"),
    ("http://user:pw@hooks.example.com/", "credentials"),
    ("http://127.0.0.1:9000/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://10.0.0.8/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://100.64.0.1/", "not public"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://internal.example.com/", "10.1.2.3 (private"),
    ("http://meta.example.com/", "169.254.169.254"),
    ("http://rebind.example.com/", "127.0.0.1 (loopback"),
    ("http://nowhere.invalid/", "does not resolve"),
    ("http://[::1/", "not a valid URL"),
])
def test_refused_urls_name_the_field_and_the_fix(url, why):
    with pytest.raises(SpecError) as refused:
        check_url(url, allowed_hosts=[], resolver=DNS)
    assert why in refused.value.message
    assert refused.value.status_code == 422
    assert refused.value.details[0]["field"] == "url"


def test_the_allowlist_names_hosts_as_written():
    assert check_url("http://127.0.0.1:9000/h", allowed_hosts=["127.0.0.1"], resolver=DNS)
    # A name that resolves to an allowed address is not the allowed host.
    local = fake_dns({"localhost": ["127.0.0.1"]})
    with pytest.raises(SpecError, match="loopback"):
        check_url("http://localhost:9000/h", allowed_hosts=["127.0.0.1"], resolver=local)


def test_the_real_resolver_refuses_localhost():
    with pytest.raises(SpecError, match="loopback"):
        check_url("http://localhost/", allowed_hosts=[])


@pytest.mark.parametrize("address, reason", [("8.8.8.8", None), ("2606:4700::1111", None),
                                             ("172.16.0.1", "private"),
                                             ("fd00:ec2::254", "private")])
def test_blocked_reason(address, reason):
    assert blocked_reason(address) == reason
