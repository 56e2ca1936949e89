"""Patches to a process-wide class that act only for the host serving the current request."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from reconciler.sandbox.patching import Patches


class Host:
    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.RLock()


def fresh_class() -> type:
    """A class of its own per test, standing in for one of moto's (patches never go away)."""

    class Backend:
        def describe(self, what: str) -> str:
            return f"moto {what}"

    return Backend


def describing_as_host(patches: Patches[Host], owner: type) -> None:
    @patches.around(owner, "describe")
    def describe(host: Host, original: Callable[..., str], backend: Any, what: str) -> str:
        return f"{host.name} after {original(backend, what)}"


def installed(name: str) -> tuple[type, Patches[Host]]:
    """A fresh class whose `describe` is wrapped by `describing_as_host`, installed."""
    owner = fresh_class()
    patches: Patches[Host] = Patches(name)
    describing_as_host(patches, owner)
    patches.install()
    return owner, patches


def test_a_wrapped_method_acts_for_the_serving_host_and_is_moto_s_own_outside_requests() -> None:
    owner, patches = installed("test_serving")
    first, second = Host("first"), Host("second")
    assert owner().describe("x") == "moto x"
    with patches.serving(first):
        assert owner().describe("x") == "first after moto x"
        with patches.serving(second):
            assert owner().describe("y") == "second after moto y"
        assert owner().describe("z") == "first after moto z"
    assert owner().describe("x") == "moto x"


def test_installing_again_wraps_nothing_twice() -> None:
    owner, patches = installed("test_once")
    patches.install()
    with patches.serving(Host("only")):
        assert owner().describe("x") == "only after moto x"


def test_each_thread_sees_the_host_serving_its_own_request() -> None:
    owner, patches = installed("test_threads")
    barrier = threading.Barrier(2)

    def request(name: str) -> str:
        with patches.serving(Host(name)):
            barrier.wait(timeout=5)  # both requests are being served at once
            return str(owner().describe(name))

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(request, ["a", "b"]))
    assert answers == ["a after moto a", "b after moto b"]


def test_the_host_s_lock_keeps_other_threads_out_while_a_patched_call_runs() -> None:
    owner = fresh_class()
    patches: Patches[Host] = Patches("test_lock")
    host = Host("locked")
    inside = threading.Event()
    release = threading.Event()

    @patches.around(owner, "describe")
    def describe(host: Host, original: Callable[..., str], backend: Any, what: str) -> str:
        inside.set()
        release.wait(timeout=5)
        return original(backend, what)

    patches.install()

    def request() -> None:
        with patches.serving(host):
            owner().describe("x")

    thread = threading.Thread(target=request)
    thread.start()
    assert inside.wait(timeout=5)
    assert not host.lock.acquire(blocking=False)
    release.set()
    thread.join(timeout=5)
    assert host.lock.acquire(blocking=False)
    host.lock.release()


def test_an_added_action_answers_inside_requests_and_is_unimplemented_outside() -> None:
    owner = fresh_class()
    patches: Patches[Host] = Patches("test_adds")

    @patches.adds(owner, "list_things")
    def list_things(host: Host, response: Any) -> list[str]:
        return [host.name]

    patches.install()
    method = owner.list_things  # type: ignore[attr-defined]
    assert method.__name__ == "list_things"  # moto dispatches by this name
    with patches.serving(Host("sandbox")):
        assert owner().list_things() == ["sandbox"]
    with pytest.raises(NotImplementedError, match="list_things action has not been implemented"):
        owner().list_things()


def test_a_patch_registered_after_install_is_refused_rather_than_lost() -> None:
    owner = fresh_class()
    patches: Patches[Host] = Patches("test_late")
    patches.install()
    with pytest.raises(RuntimeError, match="after install"):
        describing_as_host(patches, owner)


def test_wrapping_a_method_moto_does_not_have_fails_at_install() -> None:
    owner = fresh_class()
    patches: Patches[Host] = Patches("test_missing")

    @patches.around(owner, "nonexistent")
    def hook(host: Host, original: Callable[..., Any], backend: Any) -> None:
        return None

    with pytest.raises(RuntimeError, match="no nonexistent to wrap"):
        patches.install()
