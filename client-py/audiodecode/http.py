"""The HTTP transcription service from Python: ``serve_http`` starts a daemon that answers
OpenAI's audio API (and whisper-asr-webservice's ``/asr``), for notebooks and tests::

    service = audiodecode.serve_http(model="base")
    client = openai.OpenAI(base_url=service.http_url + "/v1", api_key="unused")
    text = client.audio.transcriptions.create(model="whisper-1", file=open("a.wav", "rb")).text
    service.close()
"""

from __future__ import annotations

from audiodecode._daemon import Daemon


def serve_http(
    address: str = "127.0.0.1:8000",
    *,
    model: str = "base",
    api_key: str | None = None,
    workers: int | None = None,
    **options: str | float | bool,
) -> Daemon:
    """Starts a private daemon serving HTTP at ``address`` (port 0 picks a free one) and
    returns it once the model is loaded; ``http_url`` is where it listens. ``options`` are
    ``audiodecode serve``'s HTTP flags without dashes (``threads=2``, ``batch_wait_ms=25``,
    ``max_upload_mb=25``, ``http_vad_filter=False``). Stop it with ``close()`` or use it
    as a context manager."""
    http_options: dict[str, str | float | bool] = {"model": model, **options}
    if api_key is not None:
        http_options["api_key"] = api_key
    daemon = Daemon(workers=workers, http=address, http_options=http_options)
    return daemon.__enter__()
