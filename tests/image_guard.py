"""No test pulls an image, and no test uses an image that no fixture of its own provides.

The Docker SDK pulls an image that ``containers.run`` cannot find, from a public registry this
machine cannot reach; and a test that uses an image some other module happened to build first
passes only in that order (on a brand-new machine it fails). Both are caught on every run, in
any order:

- in this process, a pull through the SDK fails at once with a message that says so;
- after each test that may touch the engine, the engine's own event log of that test (so
  ``clawhq serve`` subprocesses and the ``docker`` CLI count too) is read: every container
  created during the test must come from an image that a fixture in the test's closure
  provides (:data:`FIXTURE_IMAGES`), or that was built, tagged, imported or loaded during it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

#: Fixtures that provide images, and the references they make usable (a trailing ``:``
#: allows every tag of that repository).
FIXTURE_IMAGES: dict[str, tuple[str, ...]] = {}
#: Events that make an image reference usable within the test that saw them.
MAKES_IMAGE = frozenset({"tag", "import", "load", "build"})


def provide(fixture: str, *images: str) -> None:
    """Declare that ``fixture`` makes ``images`` exist (called by the conftest)."""
    FIXTURE_IMAGES[fixture] = images


def normal(ref: str) -> str:
    """``name`` and ``name:latest`` are one reference; a digest or an id is kept as it is."""
    last = ref.rsplit("/", 1)[-1]
    if ref.startswith("sha256:") or "@" in ref or ":" in last:
        return ref
    return f"{ref}:latest"


def allowed(ref: str, provided: set[str], made: set[str]) -> bool:
    ref = normal(ref)
    if ref.startswith("sha256:") or ref in made:
        return True
    return any(ref == p or (p.endswith(":") and ref.startswith(p)) for p in provided)


class PullRefused(RuntimeError):
    pass


@pytest.fixture(scope="session", autouse=True)
def _no_pulls() -> Iterator[None]:
    """Any pull through the Docker SDK in this process fails with a clear message."""
    try:
        from docker.api.image import ImageApiMixin
    except ImportError:
        yield
        return
    original = ImageApiMixin.pull

    def refuse(self: Any, repository: str, *args: Any, **kwargs: Any) -> Any:
        raise PullRefused(
            f"a test tried to pull {repository!r}: tests never pull (no registry is reachable "
            "here). Depend on the fixture that builds the image, and create containers of "
            "images that exist"
        )

    ImageApiMixin.pull = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        ImageApiMixin.pull = original  # type: ignore[method-assign]


def _engine() -> Any | None:
    try:
        import docker

        client = docker.from_env(version="1.41", timeout=10)
        client.ping()
        return client
    except Exception:
        return None


def _uses_engine(item: pytest.Item) -> bool:
    return "integration" in item.nodeid.split("::")[0] or bool(item.get_closest_marker("docker"))


_STARTED = pytest.StashKey[float]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_STARTED] = time.time()  # before the fixtures: what they build counts


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    result = yield
    if not _uses_engine(item) or _STARTED not in item.stash:
        return result
    client = _engine()
    if client is None:
        return result
    try:
        problems = unprovided_images(client, item, item.stash[_STARTED])
    finally:
        client.close()
    if problems:
        pytest.fail(
            f"{item.nodeid} created containers of images no fixture of it provides: "
            + "; ".join(problems)
            + ". Depend on the fixture that builds them (tests/conftest.py), never on an "
            "image another test happened to build first",
            pytrace=False,
        )
    return result


def unprovided_images(client: Any, item: pytest.Item, started: float) -> list[str]:
    """Containers created since ``started`` from images the test did not provide."""
    names = set(getattr(item, "fixturenames", ()))
    provided = {ref for name in names & set(FIXTURE_IMAGES) for ref in FIXTURE_IMAGES[name]}
    events = client.api.events(
        since=f"{started:.6f}",
        until=f"{time.time():.6f}",
        decode=True,
        filters={"type": ["container", "image"]},
    )
    made: set[str] = set()
    creates: list[str] = []
    for event in events:
        if event.get("timeNano", 0) < started * 1e9:
            continue
        action = str(event.get("Action", ""))
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        if event.get("Type") == "image" and action in MAKES_IMAGE:
            made.add(normal(str((event.get("Actor") or {}).get("ID", ""))))
            if name := attributes.get("name"):
                made.add(normal(str(name)))
        elif event.get("Type") == "container" and action == "create":
            creates.append(str(attributes.get("image", "")))
    return sorted({f"{ref!r}" for ref in creates if ref and not allowed(ref, provided, made)})
