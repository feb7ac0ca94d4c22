"""Talking to a gateway the way OpenClaw's Control UI does: its WebSocket handshake, signed by a
fresh browser device, then a few RPCs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from typing import Any

import websockets
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


async def control_ui_connect(
    url: str,
    headers: dict[str, str],
    calls: tuple[str, ...] = (),
    connect_to: tuple[str, int] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The Control UI's own handshake (client openclaw-control-ui, mode webchat, a fresh
    Ed25519 device signing the gateway's challenge), then ``calls``; the connect answer and
    the calls' answers."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    device_id = hashlib.sha256(public).hexdigest()
    b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # noqa: E731
    client = {
        "id": "openclaw-control-ui",
        "version": "control-ui",
        "platform": "web",
        "mode": "webchat",
    }
    scopes = ["operator.admin", "operator.read", "operator.write", "operator.approvals"]
    # ``connect_to``: where to connect when the URL's host (an agent's origin) resolves nowhere.
    where = {"host": connect_to[0], "port": connect_to[1]} if connect_to else {}
    async with websockets.connect(url, additional_headers=headers, open_timeout=10, **where) as ws:

        async def answer(frame_id: str) -> dict[str, Any]:
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if frame.get("type") == "res" and frame.get("id") == frame_id:
                    return frame  # type: ignore[no-any-return]

        challenge = json.loads(await asyncio.wait_for(ws.recv(), 10))["payload"]
        signed = "|".join(
            ["v2", device_id, client["id"], client["mode"], "operator", ",".join(scopes),
             str(challenge["ts"]), "", challenge["nonce"]]
        )  # fmt: skip
        device = {
            "id": device_id,
            "publicKey": b64(public),
            "signature": b64(key.sign(signed.encode())),
            "signedAt": challenge["ts"],
            "nonce": challenge["nonce"],
        }
        params = {"minProtocol": 4, "maxProtocol": 4, "client": client, "role": "operator",
                  "scopes": scopes, "device": device}  # fmt: skip
        await ws.send(
            json.dumps({"type": "req", "id": "connect", "method": "connect", "params": params})
        )
        hello = await answer("connect")
        results = []
        for n, method in enumerate(calls if hello["ok"] else ()):
            call_params = {"sessionKey": "main"} if method == "chat.history" else {}
            started = time.perf_counter()
            await ws.send(
                json.dumps({"type": "req", "id": f"{n}", "method": method, "params": call_params})
            )
            result = await answer(f"{n}")
            result["seconds"] = time.perf_counter() - started  # the round trip, for benchmarks
            results.append(result)
        return hello, results
