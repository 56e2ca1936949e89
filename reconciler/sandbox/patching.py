"""Methods of moto's classes replaced for the requests a sandbox serves, and only for those.

moto's backends and response classes belong to the process: every `SandboxAws` in it (a test
session starts several, one after another or side by side) and anything using moto in-process
reach the same methods. So a `Patches` replaces each of its methods once per process, however
many sandboxes start, and the replacement asks at every call which host is serving the current
request: the one whose `serving` block the request runs in. The sandbox's middleware opens that
block around moto's handling of the request, which builds the whole answer inside it. Outside
any such block a replaced method is moto's own.

moto's models are not thread safe, and the sandbox's werkzeug server (as moto's
`ThreadedMotoServer`) serves each request on a thread of its own: every replaced call runs
under the serving host's lock, so a describe never sees half an update.

Nothing is ever put back: a process that started a sandbox keeps the replacements, which act
on no request but a sandbox's.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Concatenate, Generic, Protocol, TypeVar


class Host(Protocol):
    """What a replaced method needs from the controller serving the request."""

    lock: threading.RLock


H = TypeVar("H", bound=Host)

# Makes the replacement from what the class had (None when moto has no such method).
_Maker = Callable[[Callable[..., Any] | None], Callable[..., Any]]


class Patches(Generic[H]):
    """The methods one kind of host (a controller) replaces, and which host is serving."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._serving: ContextVar[H | None] = ContextVar(name, default=None)
        self._makers: list[tuple[type, str, _Maker]] = []
        self._lock = threading.Lock()
        self._installed = False

    def current(self) -> H | None:
        """The host serving the current request; None outside requests."""
        return self._serving.get()

    @contextmanager
    def serving(self, host: H) -> Iterator[None]:
        """The replaced methods act for `host` on the calls made inside this block."""
        token = self._serving.set(host)
        try:
            yield
        finally:
            self._serving.reset(token)

    def around(
        self, owner: type, name: str
    ) -> Callable[
        [Callable[Concatenate[H, Callable[..., Any], ...], Any]],
        Callable[Concatenate[H, Callable[..., Any], ...], Any],
    ]:
        """Decorator: inside a request, `hook(host, original, self, *args, **kwargs)` stands in
        for moto's `owner.name`, which it is handed as `original` (unbound)."""

        def register(
            hook: Callable[Concatenate[H, Callable[..., Any], ...], Any],
        ) -> Callable[Concatenate[H, Callable[..., Any], ...], Any]:
            def make(original: Callable[..., Any] | None) -> Callable[..., Any]:
                if original is None:
                    raise RuntimeError(f"moto's {owner.__name__} has no {name} to wrap")

                @functools.wraps(original)
                def method(*args: Any, **kwargs: Any) -> Any:
                    host = self.current()
                    if host is None:
                        return original(*args, **kwargs)
                    with host.lock:
                        return hook(host, original, *args, **kwargs)

                return method

            self._register(owner, name, make)
            return hook

        return register

    def adds(
        self, owner: type, name: str
    ) -> Callable[[Callable[Concatenate[H, ...], Any]], Callable[Concatenate[H, ...], Any]]:
        """Decorator: inside a request, `handler(host, self, *args, **kwargs)` answers an action
        moto lacks; outside one the action stays unimplemented, as moto says."""

        def register(
            handler: Callable[Concatenate[H, ...], Any],
        ) -> Callable[Concatenate[H, ...], Any]:
            def make(_: Callable[..., Any] | None) -> Callable[..., Any]:
                @functools.wraps(handler)
                def method(*args: Any, **kwargs: Any) -> Any:
                    host = self.current()
                    if host is None:
                        raise NotImplementedError(f"The {name} action has not been implemented")
                    with host.lock:
                        return handler(host, *args, **kwargs)

                # moto dispatches an action to the response method of that name.
                method.__name__ = name
                return method

            self._register(owner, name, make)
            return handler

        return register

    def install(self) -> None:
        """Replace the methods (once per process; later calls change nothing)."""
        with self._lock:
            if self._installed:
                return
            for owner, name, make in self._makers:
                setattr(owner, name, make(getattr(owner, name, None)))
            self._installed = True

    def _register(self, owner: type, name: str, make: _Maker) -> None:
        with self._lock:
            if self._installed:
                # It would never take effect: the methods were replaced already.
                raise RuntimeError(f"{self._name}: {owner.__name__}.{name} came after install")
            self._makers.append((owner, name, make))


__all__ = ["Host", "Patches"]


def bound(original: Callable[..., Any], *args: Any, **kwargs: Any) -> inspect.BoundArguments:
    """A call of moto's `original` method with its arguments by parameter name, defaults
    filled in (moto's backends take most of them positionally or by keyword alike)."""
    call = inspect.signature(original).bind(*args, **kwargs)
    call.apply_defaults()
    return call
