"""Decide, before loading a hub id, whether the Hugging Face Hub can be reached, so that an offline export fails fast.

Unreachable, huggingface_hub retries every request five times with backoff (about half a minute) and logs each
retry. One bounded probe of the Hub's endpoint settles it instead: reachable, transformers loads the id as usual;
unreachable (or HF_HUB_OFFLINE set), a model in the local cache loads with `local_files_only`, and any other
is one ExportError line. It downloads nothing itself, and does nothing for folders and .gguf files.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from memgpt_runtime.errors import ExportError

from .sources import Source

PROBE_SECONDS = 3.0  # bounds DNS too, which requests' own timeout does not
HUB_HINT = "check the id and your network, or pass a local folder or .gguf file"


def reach_hub(source: Source) -> Source:
    """`source` as is if the Hub answers; loading from the local cache if not; ExportError if it is not cached either."""
    if source.kind != "hub":
        return source
    why = offline_reason()
    if why is None:
        return source
    if is_cached(source.load_from):
        return replace(source, local_files_only=True)
    raise ExportError(
        f"could not load {source.name} from the Hugging Face Hub ({why}, and the model is not in the local cache); {HUB_HINT}"
    )


def offline_reason() -> str | None:
    """Why the Hub cannot be used now (None if it can)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if not reachable(constants.ENDPOINT):
        return f"{constants.ENDPOINT} is unreachable"
    return None


def reachable(endpoint: str, seconds: float = PROBE_SECONDS) -> bool:
    """Whether one HEAD request to `endpoint` gets any HTTP answer within `seconds` (through the user's proxies)."""
    from huggingface_hub.utils import get_session

    answered, done = [], threading.Event()

    def probe() -> None:
        try:
            get_session().head(endpoint, timeout=seconds, allow_redirects=False)
            answered.append(True)
        except Exception:  # any failure to get an answer (DNS, refused, TLS, timeout) means unreachable
            pass
        finally:
            done.set()

    # a daemon thread, so a DNS lookup that hangs past `seconds` does not hold up the export or its exit
    threading.Thread(target=probe, name="memgpt-hub-probe", daemon=True).start()
    done.wait(seconds)
    return bool(answered)


def is_cached(repo_id: str) -> bool:
    """Whether the model's config.json is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an id the cache cannot even name (huggingface_hub validates it): not cached
        return False
