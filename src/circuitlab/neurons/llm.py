"""A language model over an OpenAI-compatible HTTP endpoint: chat completions with urllib only, with retries.

:class:`LLMClient` is what :class:`~circuitlab.neurons.explain.LLMExplainer` and
:class:`~circuitlab.neurons.explain.LLMSimulator` talk to (Bills et al. 2023's explainer and simulator, with any
model served behind an OpenAI-compatible API). Nothing is sent unless an endpoint is configured; an endpoint
that does not answer, refuses, or answers something unreadable is an :class:`LLMError`.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Optional

from circuitlab.core import check_count, check_number, shorten
from circuitlab.errors import CircuitlabError, InputError


class LLMError(CircuitlabError):
    """A language-model endpoint that is not configured, does not answer, or answers something unreadable."""


ENV_URL, ENV_MODEL, ENV_KEY = "CIRCUITLAB_LLM_URL", "CIRCUITLAB_LLM_MODEL", "CIRCUITLAB_LLM_KEY"


@dataclass
class LLMClient:
    """Chat completions from an OpenAI-compatible endpoint, with urllib only.

    ``url`` is the API base (``http://127.0.0.1:8000/v1``; ``/chat/completions`` is appended unless it is already
    there); ``model`` the model name the endpoint expects; ``key`` goes in an ``Authorization: Bearer`` header
    (none without it). Unset arguments come from ``CIRCUITLAB_LLM_URL``, ``CIRCUITLAB_LLM_MODEL`` and
    ``CIRCUITLAB_LLM_KEY`` (or ``OPENAI_API_KEY``). Nothing is sent without a URL: :meth:`chat` raises
    :class:`LLMError` naming the offline default instead.

    Each request waits at most ``timeout`` seconds; a timeout, a refused connection, HTTP 429 or a 5xx answer is
    retried up to ``retries`` more times (after ``backoff``, ``2 * backoff``, ... seconds); other HTTP errors fail
    at once. So one call takes at most about ``(retries + 1) * timeout`` plus the back-off.
    """

    url: Optional[str] = None
    model: Optional[str] = None
    key: Optional[str] = field(default=None, repr=False)
    timeout: float = 60.0
    retries: int = 2
    backoff: float = 1.0
    temperature: float = 0.0

    def __post_init__(self) -> None:
        given = "url" if self.url else ENV_URL
        self.url = self.url or os.environ.get(ENV_URL) or None
        self.model = self.model or os.environ.get(ENV_MODEL) or None
        self.key = self.key or os.environ.get(ENV_KEY) or os.environ.get("OPENAI_API_KEY") or None
        check_number(self.timeout, "timeout", low=0, low_open=True, what="a positive number of seconds")
        check_number(self.backoff, "backoff", low=0, what="a non-negative number of seconds")
        self.retries = check_count(self.retries, "retries", 0)
        if self.url is not None:
            parts = urllib.parse.urlsplit(str(self.url))
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise InputError(f"{given}={shorten(self.url)} is not an http(s) URL; give the API base with its "
                                 "scheme, e.g. http://127.0.0.1:8000/v1.")

    @property
    def configured(self) -> bool:
        return bool(self.url)

    @property
    def endpoint(self) -> str:
        base = str(self.url).rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"

    def chat(self, messages: list[dict[str, str]]) -> str:
        """The assistant's reply to ``messages`` (``[{"role": ..., "content": ...}, ...]``)."""
        if not self.configured:
            raise LLMError(
                f"no language-model endpoint is configured: pass url=... (an OpenAI-compatible API base, e.g. "
                f"http://127.0.0.1:8000/v1) or set {ENV_URL} (and {ENV_MODEL}, {ENV_KEY} or OPENAI_API_KEY). "
                "Nothing was sent. The offline default needs none: NgramExplainer and NgramSimulator (the n-gram "
                "baseline).")
        body: dict[str, Any] = {"messages": messages, "temperature": self.temperature}
        if self.model:
            body["model"] = self.model
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        data = json.dumps(body).encode()
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            req = urllib.request.Request(self.endpoint, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    reply = json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} {e.reason}"
                if e.code == 429 or e.code >= 500:
                    continue
                raise LLMError(f"the endpoint {self.endpoint} refused the request ({last}); check the URL, model "
                               "name and key.") from None
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
                continue
            except ValueError:
                raise LLMError(f"the endpoint {self.endpoint} answered something that is not JSON.") from None
            try:
                return str(reply["choices"][0]["message"]["content"])
            except (KeyError, IndexError, TypeError):
                raise LLMError(f"the endpoint {self.endpoint} answered JSON without choices[0].message.content: "
                               f"{json.dumps(reply)[:200]}") from None
        raise LLMError(f"the endpoint {self.endpoint} did not answer after {self.retries + 1} attempt(s) (last: "
                       f"{last}; timeout {self.timeout:g} s each). Check that it is running, or use the offline "
                       "default, NgramExplainer and NgramSimulator (the n-gram baseline).")


__all__ = ["ENV_KEY", "ENV_MODEL", "ENV_URL", "LLMClient", "LLMError"]
