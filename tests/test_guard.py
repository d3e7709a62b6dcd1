"""The guard's pure rules (app/public/guard.py): which requests count as same-origin, and the login
throttle's window. The server-level attacks are in tests/test_public_limits.py."""
from __future__ import annotations

import pytest

from app.public.guard import LoginThrottle, same_origin

SPACE = "owner-studio.hf.space"


@pytest.mark.parametrize("headers,ok", [
    ({"host": SPACE, "origin": f"https://{SPACE}"}, True),
    ({"host": "127.0.0.1:7860", "origin": "http://127.0.0.1:7860"}, True),
    ({"host": "internal:7860", "x-forwarded-host": SPACE, "origin": f"https://{SPACE}"}, True),
    ({"host": SPACE}, True),  # API clients send no Origin
    ({"host": SPACE, "origin": "https://evil.example"}, False),
    ({"host": SPACE, "origin": f"https://{SPACE}.evil.example"}, False),
    ({"host": "127.0.0.1:7860", "origin": "http://127.0.0.1:7861"}, False),
    ({"host": SPACE, "origin": "null"}, False),
    ({"host": SPACE, "sec-fetch-site": "cross-site", "sec-fetch-mode": "cors"}, False),
    ({"host": SPACE, "sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"}, True),  # a link to the app
])
def test_same_origin(headers, ok):
    assert same_origin(headers) is ok


def test_an_accepted_origin_is_served_whatever_the_host():
    headers = {"host": "10.0.0.5:7860", "origin": f"https://{SPACE}"}
    assert not same_origin(headers) and same_origin(headers, {f"https://{SPACE}"})


def test_the_throttle_opens_again_after_its_window():
    throttle = LoginThrottle(max_failures=3, window_s=60)
    throttle.fail(["addr:a"], now=0)
    throttle.fail(["addr:a"], now=1)
    assert throttle.wait_s(["addr:a"], now=2) == 0
    throttle.fail(["addr:a", "user:op"], now=2)
    assert throttle.wait_s(["addr:a"], now=3) == 57 and throttle.wait_s(["user:op"], now=3) == 0
    assert throttle.wait_s(["addr:a"], now=61) == 0
