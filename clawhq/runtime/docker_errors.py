"""Docker SDK and transport errors, translated into ClawHQ's error tree."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import docker
import docker.errors
import requests.exceptions

from clawhq.errors import EngineError, EngineUnavailable, ImageNotFound


@contextlib.contextmanager
def engine_errors(action: str) -> Iterator[None]:
    """Translate Docker SDK and transport errors into ClawHQ's error tree."""
    try:
        yield
    except docker.errors.ImageNotFound as exc:
        raise ImageNotFound(
            f"{action}: image not found on the engine ({exc.explanation}); "
            "build it with `clawhq image build`"
        ) from None
    except docker.errors.APIError as exc:
        raise EngineError(f"{action}: {exc.explanation or exc}") from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise EngineUnavailable(f"{action}: Docker Engine is unreachable ({exc})") from None
    except requests.exceptions.RequestException as exc:
        # e.g. an empty answer when the container went away mid-request
        raise EngineError(f"{action}: unexpected answer from Docker Engine ({exc})") from None
    except docker.errors.DockerException as exc:
        raise EngineUnavailable(f"{action}: {exc}") from None
