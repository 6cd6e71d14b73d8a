"""Failed-login limits: counted before hashing, per (username, client) and per client (issue 10)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from tests.conftest import PASSWORD, basic_auth, dispose
from trainflow.accounts import passwords
from trainflow.accounts.addresses import client_address, limit_key, parse_networks
from trainflow.accounts.credentials import LoginLimiter
from trainflow.app import create_app
from trainflow.errors import ConfigError, TooManyRequests

WRONG = "wrong-wrong-wrong"
STRANGER = {"REMOTE_ADDR": "203.0.113.7"}
VICTIM = {"REMOTE_ADDR": "198.51.100.20"}


@pytest.fixture
def make_app(settings):  # type: ignore[no-untyped-def]
    """The app on the test's database with some settings changed: make_app(login_address_burst=3)."""
    made = []

    def make(**changes):  # type: ignore[no-untyped-def]
        made.append(create_app(settings.replace(**changes)))
        return made[-1]

    yield make
    for app in made:
        dispose(app)


def login(client, username, password, environ=None, headers=None):  # type: ignore[no-untyped-def]
    return client.post(
        "/api/login",
        json={"username": username, "password": password},
        environ_base=environ or STRANGER,
        headers=headers or {},
    )


# -- the limiter itself ----------------------------------------------------------------------


def test_concurrent_reservations_never_exceed_the_limit():
    limiter = LoginLimiter(attempts=5, window_seconds=300, address_burst=100)
    granted, refused = [], []
    barrier = threading.Barrier(20)

    def guess() -> None:
        barrier.wait()
        try:
            granted.append(limiter.reserve("alice", "10.0.0.1"))
        except TooManyRequests as e:
            refused.append(e)

    threads = [threading.Thread(target=guess) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 5
    assert len(refused) == 15
    assert all(e.retry_after >= 1 for e in refused)


def test_a_reservation_left_unfinished_is_given_back():
    limiter = LoginLimiter(attempts=1, window_seconds=300)
    with limiter.reserve("alice", "10.0.0.1"):
        pass  # e.g. the hash pool was full: nothing was verified
    with limiter.reserve("alice", "10.0.0.1") as attempt:
        attempt.failed()
    with pytest.raises(TooManyRequests):
        limiter.reserve("alice", "10.0.0.1")


def test_a_locked_pair_says_when_its_window_ends():
    limiter = LoginLimiter(attempts=2, window_seconds=300)
    for _ in range(2):
        with limiter.reserve("alice", "10.0.0.1") as attempt:
            attempt.failed()
    with pytest.raises(TooManyRequests) as refused:
        limiter.reserve("ALICE", "10.0.0.1")
    assert 295 <= refused.value.retry_after <= 301


def test_failures_spend_the_address_budget_and_successes_give_it_back():
    limiter = LoginLimiter(attempts=5, window_seconds=300, address_burst=3, address_per_minute=1)
    for _ in range(10):
        with limiter.reserve("alice", "10.0.0.1") as attempt:
            attempt.succeeded()
    for name in ("x1", "x2", "x3"):
        with limiter.reserve(name, "10.0.0.1") as attempt:
            attempt.failed()
    with pytest.raises(TooManyRequests) as refused:
        limiter.reserve("x4", "10.0.0.1")
    assert 50 <= refused.value.retry_after <= 61
    # Another address has its own budget.
    limiter.reserve("x4", "10.0.0.2")


def test_a_pair_that_signed_in_before_is_exempt_from_its_address_budget():
    limiter = LoginLimiter(attempts=5, window_seconds=300, address_burst=1, address_per_minute=1)
    with limiter.reserve("alice", "10.0.0.1") as attempt:
        attempt.succeeded()
    with limiter.reserve("random-name", "10.0.0.1") as attempt:
        attempt.failed()
    with pytest.raises(TooManyRequests):
        limiter.reserve("another-name", "10.0.0.1")
    with limiter.reserve("alice", "10.0.0.1") as attempt:
        attempt.succeeded()


# -- the bounded hash pool -------------------------------------------------------------------


def test_the_hash_pool_answers_429_when_its_queue_is_full():
    pool = passwords.HashPool(workers=1, max_waiting=1)
    release = threading.Event()
    started = threading.Event()

    def hold() -> str:
        started.set()
        release.wait(10)
        return "done"

    running = threading.Thread(target=pool.run, args=(hold,))
    running.start()
    assert started.wait(10)
    waiting = threading.Thread(target=pool.run, args=(lambda: "next",))
    waiting.start()
    while pool._waiting < 1:  # the second caller queues behind the first
        time.sleep(0.01)
    with pytest.raises(TooManyRequests) as refused:
        pool.run(lambda: "third")
    assert refused.value.retry_after >= 1
    release.set()
    running.join()
    waiting.join()
    assert pool.run(lambda: "free again") == "free again"


def test_an_unknown_username_is_verified_once_like_a_known_one(client, alice):
    before = passwords.POOL.verifications
    assert login(client, "nobody-" + uuid.uuid4().hex, WRONG).status_code == 401
    assert login(client, "alice", WRONG).status_code == 401
    assert passwords.POOL.verifications - before == 2


# -- through the API -------------------------------------------------------------------------


def test_a_strangers_failures_do_not_lock_the_victim_out_elsewhere(app, client, alice):
    for _ in range(app.config["TRAINFLOW"].login_attempts):
        assert login(client, "alice", WRONG).status_code == 401
    refused = login(client, "alice", PASSWORD)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json["error"]["code"] == "too_many_requests"
    assert login(client, "alice", PASSWORD, VICTIM).status_code == 200
    assert client.get("/api/me", headers=alice.basic, environ_base=VICTIM).status_code == 200


def test_a_locked_pair_is_refused_its_right_password_even_from_the_cache(app, client, alice):
    """A sign-in that takes the password from the cache must not tell a locked-out guesser it was right."""
    assert login(client, "alice", PASSWORD).status_code == 200  # verified: now in the cache
    for _ in range(app.config["TRAINFLOW"].login_attempts):
        assert login(client, "alice", WRONG).status_code == 401
    assert login(client, "alice", PASSWORD).status_code == 429
    assert login(client, "alice", WRONG).status_code == 429
    assert login(client, "alice", PASSWORD, VICTIM).status_code == 200


def test_a_verified_basic_client_keeps_working_while_its_address_is_locked(app, client, alice):
    assert client.get("/api/me", headers=alice.basic, environ_base=STRANGER).status_code == 200
    for _ in range(app.config["TRAINFLOW"].login_attempts):
        login(client, "alice", WRONG)
    assert client.get("/api/me", headers=alice.basic, environ_base=STRANGER).status_code == 200


def test_a_cached_basic_credential_tells_a_guesser_at_another_address_nothing(app, client, alice):
    """alice's own client (VICTIM) has her password cached; a guesser (STRANGER) locks himself out."""
    assert client.get("/api/me", headers=alice.basic, environ_base=VICTIM).status_code == 200
    for _ in range(app.config["TRAINFLOW"].login_attempts):
        login(client, "alice", WRONG)
    right = client.get("/api/me", headers=alice.basic, environ_base=STRANGER)
    wrong = client.get("/api/me", headers=basic_auth("alice", WRONG), environ_base=STRANGER)
    assert (right.status_code, wrong.status_code) == (429, 429)
    assert right.json["error_code"] == wrong.json["error_code"]
    assert client.get("/api/me", headers=alice.basic, environ_base=VICTIM).status_code == 200


def test_spraying_random_usernames_runs_out_of_the_address_budget(make_app, alice):
    app = make_app(login_address_burst=3)
    client = app.test_client()
    assert login(client, "alice", PASSWORD).status_code == 200  # alice signed in from here before
    for _ in range(3):
        assert login(client, "nobody-" + uuid.uuid4().hex, WRONG).status_code == 401
    before = passwords.POOL.verifications
    refused = login(client, "nobody-" + uuid.uuid4().hex, WRONG)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert passwords.POOL.verifications == before  # refused before any hashing
    assert login(client, "nobody-" + uuid.uuid4().hex, WRONG, VICTIM).status_code == 401
    # alice, who signed in from this address before, still can.
    assert login(client, "alice", PASSWORD).status_code == 200


def test_registration_spends_the_address_budget(make_app):
    app = make_app(login_address_burst=2)
    client = app.test_client()
    for name in ("reg-one", "reg-two"):
        response = client.post("/api/register", json={"username": name, "password": PASSWORD})
        assert response.status_code == 201
    response = client.post("/api/register", json={"username": "reg-three", "password": PASSWORD})
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1


def test_a_refused_registration_gives_its_budget_back(make_app):
    app = make_app(login_address_burst=1)
    client = app.test_client()
    assert client.post("/api/register", json={"username": "taken", "password": PASSWORD}).status_code == 201
    client = make_app(login_address_burst=1).test_client()
    assert client.post("/api/register", json={"username": "taken", "password": PASSWORD}).status_code == 409
    assert client.post("/api/register", json={"username": "fresh", "password": PASSWORD}).status_code == 201


# -- client addresses ------------------------------------------------------------------------

PROXY = {"REMOTE_ADDR": "10.0.0.5"}


def test_x_forwarded_for_is_ignored_without_trusted_proxies(app, client, alice):
    for i in range(app.config["TRAINFLOW"].login_attempts):
        login(client, "alice", WRONG, headers={"X-Forwarded-For": f"192.0.2.{i}"})
    # A new forged address each time changed nothing: the peer's address is locked.
    response = login(client, "alice", PASSWORD, headers={"X-Forwarded-For": "192.0.2.200"})
    assert response.status_code == 429


def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(make_app, alice):
    app = make_app(trusted_proxies="10.0.0.0/24, ::1")
    client = app.test_client()
    stranger = {"X-Forwarded-For": "203.0.113.7"}
    for _ in range(app.config["TRAINFLOW"].login_attempts):
        assert login(client, "alice", WRONG, PROXY, stranger).status_code == 401
    assert login(client, "alice", PASSWORD, PROXY, stranger).status_code == 429
    # The stranger cannot pass as someone else by writing their address first.
    spoofed = {"X-Forwarded-For": "198.51.100.20, 203.0.113.7"}
    assert login(client, "alice", PASSWORD, PROXY, spoofed).status_code == 429
    victim = {"X-Forwarded-For": "198.51.100.20"}
    assert login(client, "alice", PASSWORD, PROXY, victim).status_code == 200
    assert client.get("/api/me", headers={**alice.basic, **victim}, environ_base=PROXY).status_code == 200


TRUSTED = parse_networks("10.0.0.0/8, 2001:db8::/32")


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("192.0.2.1", ["203.0.113.9"], "192.0.2.1"),  # the peer is no proxy of ours
        ("10.0.0.1", [], "10.0.0.1"),
        ("10.0.0.1", ["203.0.113.9"], "203.0.113.9"),
        ("10.0.0.1", ["198.51.100.1, 203.0.113.9"], "203.0.113.9"),
        ("10.0.0.1", ["198.51.100.1, 203.0.113.9, 10.1.1.1"], "203.0.113.9"),  # two proxies
        ("10.0.0.1", ["198.51.100.1", "203.0.113.9"], "203.0.113.9"),  # the header twice
        ("10.0.0.1", ["10.2.2.2, 10.1.1.1"], "10.2.2.2"),  # only proxies: the farthest
        ("10.0.0.1", ["garbage, 10.1.1.1"], "10.1.1.1"),  # a bad hop: count the last good one
        ("10.0.0.1", ["203.0.113.9:4711"], "203.0.113.9"),
        ("10.0.0.1", ["[2001:db9::1]:443"], "2001:db9::1"),
        ("2001:db8::1", ["::ffff:203.0.113.9"], "203.0.113.9"),
        ("not an address", ["203.0.113.9"], "not an address"),
    ],
)
def test_the_client_address_is_read_from_the_right(peer, forwarded, expected):
    assert client_address(peer, forwarded, TRUSTED) == expected


def test_ipv6_clients_are_limited_per_64():
    assert limit_key("2001:db8:1:2:aaaa::1") == limit_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert limit_key("203.0.113.9") == "203.0.113.9"


def test_a_bad_trusted_proxy_setting_stops_the_start(settings):
    with pytest.raises(ConfigError, match="TRAINFLOW_TRUSTED_PROXIES"):
        create_app(settings.replace(trusted_proxies="10.0.0.0/8, proxy.internal"))


@pytest.mark.parametrize("header", ["1.2.3.4, \u00e9", "," * 5000, "unknown", "::::, [::1"])
def test_any_forwarded_header_is_harmless(make_app, alice, header):
    app = make_app(trusted_proxies="10.0.0.0/24")
    client = app.test_client()
    response = login(client, "alice", PASSWORD, PROXY, {"X-Forwarded-For": header})
    assert response.status_code == 200


@pytest.mark.parametrize("username", ["x" * 20_000, "\u00e9" * 300, "a\u0000b"])
def test_any_basic_username_is_a_json_401(client, username):
    import base64

    credential = base64.b64encode(f"{username}:{WRONG}".encode()).decode()
    response = client.get("/api/me", headers={"Authorization": f"Basic {credential}"}, environ_base=STRANGER)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthenticated"


def _login_all_at_once(app, monkeypatch, count, password):  # type: ignore[no-untyped-def]
    """``count`` identical logins; the first one's check waits until the others queue behind it."""
    from trainflow.accounts import auth, service

    state = app.extensions["trainflow.auth"]
    authenticate = service.authenticate

    def gated(*args):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 30
        while state.flights.waiting < count - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        return authenticate(*args)

    monkeypatch.setattr(auth.service, "authenticate", gated)
    statuses = []

    def one() -> None:
        response = login(app.test_client(), "alice", password)
        statuses.append(response.status_code)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return statuses


def test_a_clients_parallel_calls_with_one_credential_share_one_check(app, alice, monkeypatch):
    """A client's parallel first calls must not lock it out (they would take 20 reservations)."""
    before = passwords.POOL.verifications
    statuses = _login_all_at_once(app, monkeypatch, 20, PASSWORD)
    assert statuses == [200] * 20
    assert passwords.POOL.verifications - before == 1


def test_the_same_wrong_password_sent_in_parallel_counts_once(app, client, alice, monkeypatch):
    statuses = _login_all_at_once(app, monkeypatch, 20, WRONG)
    assert statuses == [401] * 20
    monkeypatch.undo()
    for i in range(app.config["TRAINFLOW"].login_attempts - 1):
        assert login(client, "alice", f"{WRONG}-{i}").status_code == 401
    assert login(client, "alice", PASSWORD).status_code == 429
