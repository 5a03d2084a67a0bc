"""Where a model comes from: a local folder or file (recorded resolved, so a run names it from any folder),
or a Hugging Face hub id (anything that is no existing local path), read from the local cache or the hub.

With no network huggingface_hub retries every file for half a minute before transformers gives up. skn
asks first, in at most `REACH_TIMEOUT_S` seconds, whether the hub answers (not when the hub's own offline
mode, HF_HUB_OFFLINE=1, is on): a hub model that is not in the local cache then fails at once with one line
(`check_hub_model`), and one that is cached loads with the hub's offline mode on (`offline_unless_reachable`),
as `HF_HUB_OFFLINE=1` would, without retries.
"""

from __future__ import annotations

import os
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from skn.errors import ModelError, UsageError

REACH_TIMEOUT_S = 2.0  # how long skn waits to learn whether the hub answers
_SOCKS_VARIABLES = ("ALL_PROXY", "all_proxy")


def is_local(name: str) -> bool:
    """A local folder or file: what transformers, too, would read from disk rather than from the hub."""
    return bool(name) and Path(name).expanduser().exists()


def is_hub_id(name: str) -> bool:
    """A hub id: a name that is no existing local path (the bundled model, "", is neither)."""
    return bool(name) and not is_local(name)


def recorded_name(name: str) -> str:
    """How run.json and prompt files name a model: a local path resolved (absolute), a hub id as given."""
    return str(Path(name).expanduser().resolve()) if is_local(name) else name


def hub_offline() -> bool:
    """The hub's own offline mode (HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1 when huggingface_hub was imported)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _answers(url: str, timeout: float, answer: list[bool]) -> None:
    """Whether anything at `url` answers HTTPS: any status counts, and so does a certificate this Python does not
    trust (a company proxy's, which huggingface_hub may be told to trust); no name, no route, no answer do not."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
        answer.append(True)
    except urllib.error.HTTPError:  # the hub answered, with an error status
        answer.append(True)
    except urllib.error.URLError as err:
        answer.append(isinstance(err.reason, ssl.SSLCertVerificationError))
    except (OSError, ValueError):  # a timeout while reading, a malformed endpoint
        answer.append(False)


def hub_reachable(timeout: float = REACH_TIMEOUT_S) -> bool:
    """Whether the hub's endpoint answers a HEAD request within `timeout` seconds, the name lookup included (in a
    thread, since a lookup ignores socket timeouts; an HTTPS proxy in the environment is used). False in the
    hub's offline mode; True behind a SOCKS proxy (ALL_PROXY), which only huggingface_hub's own requests use."""
    if hub_offline():
        return False
    if any(os.environ.get(variable) for variable in _SOCKS_VARIABLES):
        return True
    from huggingface_hub import constants

    answer: list[bool] = []
    thread = threading.Thread(target=_answers, args=(str(constants.ENDPOINT), timeout, answer), daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer) and answer[0]


def in_hub_cache(name: str, revision: str = "") -> bool:
    """Whether the local Hugging Face cache holds the config of hub model `name` (at `revision`)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name, "config.json", revision=revision or None)
    except Exception:  # a name the hub would refuse as a repo id is in no cache
        return False
    return isinstance(found, str)


def offline_line(name: str, source: str = "--model") -> str:
    return (f"{source} {name}: not in the local Hugging Face cache and the hub cannot be reached (offline); "
            "download it first or pass a local folder")


def check_hub_model(name: str, revision: str = "", source: str = "--model") -> None:
    """A hub model that is neither cached nor reachable fails here, in seconds, with one line."""
    if not is_hub_id(name) or in_hub_cache(name, revision):
        return
    if not hub_reachable():
        raise ModelError(offline_line(name, source))


def check_revision(name: str, revision: str) -> None:
    """--revision names a version of a hub model; a local folder or file, or the bundled model (""), has none."""
    if revision and not name:
        raise UsageError(f"--revision {revision}: picks a version of a hub model; give it with --model ID")
    if revision and is_local(name):
        raise UsageError(f"--revision {revision}: {name} is a local path; --revision picks a version of a hub model")


@contextmanager
def offline_unless_reachable(name: str) -> Iterator[None]:
    """Inside the block, the hub's offline mode is on when `name` is a hub id and the hub cannot be
    reached (a cached model then loads at once, without retries); the setting is restored after it."""
    if not is_hub_id(name) or hub_offline() or hub_reachable():
        yield
        return
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False


__all__ = ["REACH_TIMEOUT_S", "check_hub_model", "check_revision", "hub_offline", "hub_reachable", "in_hub_cache",
           "is_hub_id", "is_local", "offline_line", "offline_unless_reachable", "recorded_name"]
