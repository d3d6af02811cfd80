"""Which daemon the client finds, in the CLI's order, and starting one with
`banger daemon start` when nothing answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_bangerd import serve

import banger
from banger import _discovery as d

USER_ENV = {"HOME": "/home/u", "XDG_RUNTIME_DIR": "/run/user/1000"}


def test_banger_socket_wins_even_for_root() -> None:
    plan = d.plan(
        {"BANGER_SOCKET": "/tmp/x.sock", "BANGER_RUNTIME_DIR": "/tmp/r"}, is_root=True, system_trusted=True
    )

    assert plan == d.Plan("/tmp/x.sock", system_first=False, configured=True)


def test_the_socket_argument_wins_over_banger_socket() -> None:
    plan = d.plan(
        {"BANGER_SOCKET": "/tmp/x.sock"}, is_root=False, system_trusted=True, socket="/tmp/arg.sock"
    )

    assert plan == d.Plan("/tmp/arg.sock", configured=True)


def test_root_uses_the_system_socket_and_ignores_xdg() -> None:
    plan = d.plan({"XDG_RUNTIME_DIR": "/run/user/0"}, is_root=True, system_trusted=True)

    assert plan == d.Plan("/run/banger/bangerd.sock")


def test_root_with_a_runtime_dir_override_uses_it() -> None:
    plan = d.plan({"BANGER_RUNTIME_DIR": "/tmp/smoke/run"}, is_root=True, system_trusted=True)

    assert plan == d.Plan("/tmp/smoke/run/bangerd.sock")


def test_a_user_tries_a_trusted_system_daemon_before_their_own() -> None:
    plan = d.plan(USER_ENV, is_root=False, system_trusted=True)

    assert plan == d.Plan("/run/user/1000/banger/bangerd.sock", system_first=True)


def test_a_user_skips_a_system_socket_that_is_not_roots() -> None:
    plan = d.plan(USER_ENV, is_root=False, system_trusted=False)

    assert plan == d.Plan("/run/user/1000/banger/bangerd.sock", system_first=False)


def test_a_runtime_dir_override_isolates_a_user_from_the_system_daemon() -> None:
    plan = d.plan({**USER_ENV, "BANGER_RUNTIME_DIR": "/tmp/r"}, is_root=False, system_trusted=True)

    assert plan == d.Plan("/tmp/r/bangerd.sock", system_first=False)


@pytest.mark.parametrize(
    "env, socket",
    [
        ({"HOME": "/home/u"}, "/home/u/.local/state/banger/run/bangerd.sock"),
        ({"HOME": "/home/u", "XDG_RUNTIME_DIR": "relative"}, "/home/u/.local/state/banger/run/bangerd.sock"),
        ({"HOME": "/home/u", "XDG_STATE_HOME": "/s"}, "/s/banger/run/bangerd.sock"),
        ({"HOME": "/home/u", "BANGER_STATE_DIR": "/state"}, "/state/run/bangerd.sock"),
    ],
)
def test_a_user_without_xdg_runtime_dir_stays_under_their_state_dir(env: dict[str, str], socket: str) -> None:
    assert d.plan(env, is_root=False, system_trusted=False).socket == socket


def test_the_system_daemon_is_used_when_it_answers(sockdir: Path) -> None:
    system = serve(str(sockdir / "system.sock"))
    started: list[bool] = []

    found = d.find_daemon(
        d.Plan(str(sockdir / "own.sock"), system_first=True),
        autostart=True,
        start=lambda: started.append(True),
        system_socket=str(sockdir / "system.sock"),
    )
    system.shutdown()

    assert (found, started) == (str(sockdir / "system.sock"), [])


def test_the_own_daemon_is_used_when_the_system_one_does_not_answer(sockdir: Path) -> None:
    own = serve(str(sockdir / "own.sock"))

    found = d.find_daemon(
        d.Plan(str(sockdir / "own.sock"), system_first=True),
        autostart=True,
        start=lambda: pytest.fail("started a daemon though one answers"),
        system_socket=str(sockdir / "system.sock"),
    )
    own.shutdown()

    assert found == str(sockdir / "own.sock")


def test_nothing_answering_starts_the_daemon_then_uses_it(sockdir: Path) -> None:
    sock = str(sockdir / "own.sock")
    servers = []

    found = d.find_daemon(d.Plan(sock), autostart=True, start=lambda: servers.append(serve(sock)))
    servers[0].shutdown()

    assert (found, len(servers)) == (sock, 1)


def test_without_autostart_nothing_answering_is_daemon_unavailable(sockdir: Path) -> None:
    with pytest.raises(banger.DaemonUnavailable, match="no bangerd answers on"):
        d.find_daemon(
            d.Plan(str(sockdir / "own.sock")), autostart=False, start=lambda: pytest.fail("started")
        )


def test_a_daemon_without_the_api_is_refused_with_a_hint(sockdir: Path) -> None:
    old = serve(str(sockdir / "old.sock"), status=404)

    with pytest.raises(banger.DaemonUnavailable) as caught:
        d.find_daemon(d.Plan(str(sockdir / "old.sock")), autostart=True, start=lambda: pytest.fail("started"))
    old.shutdown()

    assert "does not serve the API" in caught.value.message
    assert "banger daemon stop" in (caught.value.hint or "")


def test_the_client_runs_banger_daemon_start_for_its_socket(
    sockdir: Path, fake_banger: dict[str, Path]
) -> None:
    sock = str(sockdir / "own.sock")

    status = banger.Client(sock).status()

    assert status.version == "0.1.0"
    assert fake_banger["log"].read_text() == "daemon start\n"


def test_the_client_starts_the_daemon_the_environment_names(
    sockdir: Path, fake_banger: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BANGER_SOCKET", raising=False)
    monkeypatch.setenv("BANGER_RUNTIME_DIR", str(sockdir))
    client = banger.Client()

    client.status()

    assert client.socket == str(sockdir / "bangerd.sock")
    assert fake_banger["log"].read_text() == "daemon start\n"


def test_banger_bin_names_the_cli(
    sockdir: Path, fake_banger: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("BANGER_BIN", str(fake_banger["exe"]))

    banger.Client(str(sockdir / "own.sock")).status()

    assert fake_banger["log"].read_text() == "daemon start\n"


def test_no_cli_to_start_the_daemon_is_daemon_unavailable(
    sockdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("BANGER_BIN", raising=False)

    with pytest.raises(banger.DaemonUnavailable) as caught:
        banger.Client(str(sockdir / "own.sock")).status()

    assert "no banger CLI on PATH" in caught.value.message
    assert "BANGER_BIN" in (caught.value.hint or "")


def test_a_failed_daemon_start_says_why(
    sockdir: Path, fake_banger: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_BANGER_FAIL", "error: /dev/kvm: permission denied")

    with pytest.raises(banger.DaemonUnavailable, match="/dev/kvm: permission denied"):
        banger.Client(str(sockdir / "own.sock")).status()
