"""Work that stops when its client goes away: a closed connection withdraws the request's images from the model
queue (inference.batching), so a burst of abandoned requests does not delay the radiologists still waiting."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from api.errors import ApiError
from inference import PredictionCancelled

T = TypeVar("T")
POLL_S = 0.05  # how often the connection is checked while the work runs
CLIENT_CLOSED_REQUEST = 499  # nginx's code for "the client closed the connection"; nobody is left to read it


async def run_until_disconnect(request: Request, work: Callable[..., T], *args: object) -> T:
    """`work(*args, cancel)` in the thread pool; `cancel` (a threading.Event) is set when the client disconnects or
    the request is abandoned (e.g. the request timeout), and the Predictor then drops the images not yet in a pass."""
    cancel = threading.Event()
    task = asyncio.ensure_future(run_in_threadpool(work, *args, cancel))
    try:
        while not (await asyncio.wait({task}, timeout=POLL_S))[0]:
            if await request.is_disconnected():
                cancel.set()
                break
        return await task
    except PredictionCancelled:
        raise ApiError(CLIENT_CLOSED_REQUEST, "The client closed the connection before the answer was ready.") from None
    except asyncio.CancelledError:
        cancel.set()
        raise
