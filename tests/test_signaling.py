"""WebRTC signaling: relay to the other member only, validation, peer_absent, a real aiortc
connection through the relay, and the ICE server list (TURN REST credentials)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from signaling.ice import ice_servers, turn_credential
from tests.support import Client, ServerProcess


def expected_credential(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


async def barrier(client: Client) -> dict[str, Any]:
    """A ping/pong round trip: everything the server sent before the pong has been read."""
    await client.send({"t": "ping"})
    return await client.expect("pong")


async def joined_pair(server: ServerProcess) -> tuple[Any, Client, Client]:
    pair = server.pair()
    mentor = await Client.open(server, pair.id, pair.mentor_token)
    mentee = await Client.open(server, pair.id, pair.mentee_token)
    await mentor.expect("presence", seq=2)
    await mentee.expect("presence", seq=2)
    return pair, mentor, mentee


# relay ------------------------------------------------------------------------------------
SIGNALS: list[dict[str, Any]] = [
    {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"},
    {"type": "answer", "sdp": "v=0\r\no=- 2 2 IN IP4 0.0.0.0\r\n"},
    {
        "type": "candidate",
        "candidate": {
            "candidate": "candidate:1 1 udp 2130706431 192.0.2.2 50000 typ host",
            "sdpMid": "0",
            "sdpMLineIndex": 0,
        },
    },
    {"type": "candidate", "candidate": None},
    {"type": "bye"},
]


async def test_signal_relayed_to_the_other_member_only(server: ServerProcess) -> None:
    pair, mentor, mentee = await joined_pair(server)
    for sender, receiver, sender_id in (
        (mentor, mentee, pair.mentor),
        (mentee, mentor, pair.mentee),
    ):
        for data in SIGNALS:
            await sender.send({"t": "signal", "data": data})
            got = await receiver.expect("signal")
            assert got == {"t": "signal", "from": sender_id, "data": data}
            await barrier(sender)
            echoed = [f for f in sender.frames if f["t"] == "signal" and f["from"] == sender_id]
            assert not echoed
            assert not [f for f in sender.frames if f["t"] == "error"]
    # each receiver got exactly the signals sent to it, in order, nothing else
    await barrier(mentor)
    await barrier(mentee)
    assert [f["data"] for f in mentee.frames if f["t"] == "signal"] == SIGNALS
    assert [f["data"] for f in mentor.frames if f["t"] == "signal"] == SIGNALS
    await mentor.close()
    await mentee.close()


async def test_invalid_signals_are_rejected_and_not_relayed(server: ServerProcess) -> None:
    _, mentor, mentee = await joined_pair(server)
    bad: list[Any] = [
        {"type": "renegotiate", "sdp": "v=0"},
        {"sdp": "v=0"},
        {"type": "offer"},
        {"type": "offer", "sdp": 42},
        {"type": "answer", "sdp": None},
        {"type": "candidate", "candidate": "candidate:1 1 udp 1 192.0.2.2 1 typ host"},
        {"type": "candidate"},
        "offer",
        ["offer", "v=0"],
        None,
    ]
    for data in bad:
        await mentor.send({"t": "signal", "data": data})
        err = await mentor.expect("error")
        assert err["code"] == "invalid", (data, err)
        assert isinstance(err["message"], str) and err["message"]
        assert err.get("ref") is None
        pong = await barrier(mentor)
        assert isinstance(pong["head"], int)
    await mentor.send({"t": "signal"})
    assert (await mentor.expect("error"))["code"] == "invalid"
    await barrier(mentor)
    # none of them reached the mentee: the first signal it sees is the valid one sent last
    await mentor.send({"t": "signal", "data": {"type": "bye"}})
    first = await mentee.expect("signal")
    assert first["data"] == {"type": "bye"}
    assert [f for f in mentee.frames if f["t"] == "signal"] == [first]
    errors = [f for f in mentor.frames if f["t"] == "error"]
    assert len(errors) == len(bad) + 1
    await mentor.close()
    await mentee.close()


async def test_signal_without_peer_is_peer_absent(server: ServerProcess) -> None:
    pair = server.pair()
    mentor = await Client.open(server, pair.id, pair.mentor_token)
    await mentor.expect("presence", seq=1)
    for data in SIGNALS:
        await mentor.send({"t": "signal", "data": data})
        err = await mentor.expect("error")
        assert err["code"] == "peer_absent", (data, err)
        await barrier(mentor)

    # once the mentee is online the same signal goes through ...
    mentee = await Client.open(server, pair.id, pair.mentee_token)
    await mentor.expect("presence", seq=2)
    await mentor.send({"t": "signal", "data": SIGNALS[0]})
    assert (await mentee.expect("signal"))["data"] == SIGNALS[0]

    # ... and after it has left, it is peer_absent again
    await mentee.close()
    await mentor.expect("presence", state="left", seq=3)
    await mentor.send({"t": "signal", "data": SIGNALS[1]})
    err = await mentor.expect("error")
    assert err["code"] == "peer_absent"
    await barrier(mentor)
    await mentor.close()


# a real WebRTC connection through the relay -------------------------------------------------
async def test_aiortc_peers_connect_through_the_relay(server: ServerProcess) -> None:
    pair, mentor, mentee = await joined_pair(server)
    config = RTCConfiguration(iceServers=[])
    pc_mentor = RTCPeerConnection(config)
    pc_mentee = RTCPeerConnection(config)
    received: list[str] = []
    got_message = asyncio.Event()
    connected = {"mentor": asyncio.Event(), "mentee": asyncio.Event()}

    def watch(pc: RTCPeerConnection, name: str) -> None:
        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState == "connected":
                connected[name].set()

    watch(pc_mentor, "mentor")
    watch(pc_mentee, "mentee")

    @pc_mentee.on("datachannel")
    def _channel(channel: Any) -> None:
        @channel.on("message")
        def _message(message: Any) -> None:
            received.append(message)
            got_message.set()

    try:
        channel = pc_mentor.createDataChannel("chat")
        opened = asyncio.Event()
        channel.on("open", opened.set)

        # mentor: offer (aiortc gathers before the local description is ready)
        await pc_mentor.setLocalDescription(await pc_mentor.createOffer())
        offer_sdp = pc_mentor.localDescription.sdp
        assert "a=candidate:" in offer_sdp
        await mentor.send({"t": "signal", "data": {"type": "offer", "sdp": offer_sdp}})
        await mentor.send({"t": "signal", "data": {"type": "candidate", "candidate": None}})

        # mentee: take the offer from the relay, answer
        offer = await mentee.expect("signal", timeout=10)
        assert offer["from"] == pair.mentor and offer["data"]["type"] == "offer"
        assert offer["data"]["sdp"] == offer_sdp
        end = await mentee.expect("signal", timeout=10)
        assert end["data"] == {"type": "candidate", "candidate": None}
        await pc_mentee.setRemoteDescription(RTCSessionDescription(offer["data"]["sdp"], "offer"))
        await pc_mentee.setLocalDescription(await pc_mentee.createAnswer())
        answer_sdp = pc_mentee.localDescription.sdp
        await mentee.send({"t": "signal", "data": {"type": "answer", "sdp": answer_sdp}})

        # mentor: take the answer from the relay
        answer = await mentor.expect("signal", timeout=10)
        assert answer["from"] == pair.mentee and answer["data"]["sdp"] == answer_sdp
        await pc_mentor.setRemoteDescription(RTCSessionDescription(answer["data"]["sdp"], "answer"))

        await asyncio.wait_for(opened.wait(), 20)
        channel.send("hello over webrtc")
        await asyncio.wait_for(got_message.wait(), 20)
        assert received == ["hello over webrtc"]
        await asyncio.wait_for(connected["mentor"].wait(), 20)
        await asyncio.wait_for(connected["mentee"].wait(), 20)
        assert pc_mentor.connectionState == "connected"
        assert pc_mentee.connectionState == "connected"

        # the relay only ever carried the three signals, each to the other member
        await barrier(mentor)
        await barrier(mentee)
        assert [f["data"]["type"] for f in mentee.frames if f["t"] == "signal"] == [
            "offer",
            "candidate",
        ]
        assert [f["data"]["type"] for f in mentor.frames if f["t"] == "signal"] == ["answer"]
    finally:
        await pc_mentor.close()
        await pc_mentee.close()
        await mentor.close()
        await mentee.close()


# ICE servers --------------------------------------------------------------------------------
def test_turn_credential_is_coturn_rest_hmac() -> None:
    username, credential = turn_credential("s3cret", "user-42", 1_700_000_000.7, 3600)
    assert username == "1700003600:user-42"
    assert credential == expected_credential("s3cret", "1700003600:user-42")
    assert credential != expected_credential("other", "1700003600:user-42")
    # a different user or expiry gets a different credential
    assert turn_credential("s3cret", "user-43", 1_700_000_000, 3600)[1] != credential
    assert turn_credential("s3cret", "user-42", 1_700_000_000, 7200)[0] == "1700007200:user-42"


def test_ice_servers_list() -> None:
    now = 1_700_000_000.0
    assert ice_servers("u1", now, stun_urls=[], turn_urls=[], turn_secret=None) == []
    assert ice_servers(
        "u1", now, stun_urls=["stun:s.test:3478"], turn_urls=[], turn_secret=None
    ) == [{"urls": ["stun:s.test:3478"]}]
    servers = ice_servers(
        "u1",
        now,
        stun_urls=["stun:s.test:3478"],
        turn_urls=["turn:t.test:3478", "turns:t.test:5349"],
        turn_secret="k",
        ttl=600,
    )
    assert servers[0] == {"urls": ["stun:s.test:3478"]}
    turn = servers[1]
    assert len(servers) == 2
    assert turn["urls"] == ["turn:t.test:3478", "turns:t.test:5349"]
    assert turn["username"] == "1700000600:u1"
    assert turn["credential"] == expected_credential("k", "1700000600:u1")


async def test_welcome_carries_configured_ice_servers(workdir: Path) -> None:
    proc = ServerProcess(
        workdir,
        env={
            "MENTEO_TURN_URLS": "turn:turn.example.test:3478",
            "MENTEO_TURN_SECRET": "s3cret",
            "MENTEO_STUN_URLS": "stun:stun.example.test:3478",
        },
    ).start()
    try:
        pair = proc.pair()
        for user_id, token in ((pair.mentor, pair.mentor_token), (pair.mentee, pair.mentee_token)):
            before = time.time()
            client = await Client.open(proc, pair.id, token)
            servers = client.welcome["ice_servers"]
            await client.close()
            stun = [s for s in servers if any(u.startswith("stun:") for u in s["urls"])]
            turn = [s for s in servers if any(u.startswith("turn:") for u in s["urls"])]
            assert stun == [{"urls": ["stun:stun.example.test:3478"]}]
            assert len(turn) == 1 and len(servers) == 2
            assert turn[0]["urls"] == ["turn:turn.example.test:3478"]
            expiry, _, who = turn[0]["username"].partition(":")
            assert who == user_id
            assert int(expiry) > before + 60  # expires in the future, not already
            assert turn[0]["credential"] == expected_credential("s3cret", turn[0]["username"])
            assert "s3cret" not in repr(servers)
    finally:
        proc.stop()
