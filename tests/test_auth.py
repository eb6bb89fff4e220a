"""Bearer tokens: who may publish, watch and control, with 401/403 as the contract says."""

from __future__ import annotations

import logging

import pytest

from livegen.testing.clients import SignallingError, WhepViewer, WhipPublisher
from livegen.testing.tracks import SyntheticVideoTrack
from tests.conftest import node_settings, wait_until
from tests.test_bad_input import request
from tests.test_config import run_livegen

PUBLISH, OTHER, VIEW, OPERATOR = "pub-secret-cam", "pub-secret-other", "view-secret", "op-secret-123"


@pytest.fixture
def settings():
    return node_settings(auth={
        "publish_tokens": {"cam": PUBLISH, "other": OTHER},
        "viewer_tokens": {"*": VIEW},
        "operator_token": OPERATOR,
    })


async def publish_status(node, stream: str, token: str | None) -> int:
    publisher = WhipPublisher(node.url, stream, node.http, token=token)
    try:
        await publisher.publish(SyntheticVideoTrack(160, 120))
        return 201
    except SignallingError as exc:
        return exc.status
    finally:
        await publisher.close()


async def test_publish_needs_the_streams_token(live_node, caplog):
    caplog.set_level(logging.DEBUG)
    assert await publish_status(live_node, "cam", None) == 401
    assert await publish_status(live_node, "cam", "guess-guess") == 401
    assert await publish_status(live_node, "cam", OTHER) == 403  # valid token, other stream
    assert await publish_status(live_node, "cam", VIEW) == 403  # a viewer token cannot publish
    assert await publish_status(live_node, "nobody", PUBLISH) == 403  # no token for that stream
    code, headers, _ = await request(live_node, "POST", "/whip/cam", data="v=0", headers={"Content-Type": "application/sdp"})
    assert code == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    await wait_until(lambda: not live_node.hub.streams)

    publisher = WhipPublisher(live_node.url, "cam", live_node.http, token=PUBLISH)
    await publisher.publish(SyntheticVideoTrack(160, 120))
    for token, status in ((None, 401), (OTHER, 403)):
        viewer = WhepViewer(live_node.url, "cam", live_node.http, token=token)
        with pytest.raises(SignallingError) as err:
            await viewer.watch()
        assert err.value.status == status
        await viewer.close()
    viewer = WhepViewer(live_node.url, "cam", live_node.http, token=VIEW)
    await viewer.watch()
    await (await viewer.video()).recv()

    # API writes: operator or the stream's own publisher; not a viewer
    for token, status in ((None, 401), (VIEW, 403), (OTHER, 403), (PUBLISH, 200), (OPERATOR, 200)):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        code, _, _ = await request(live_node, "PATCH", "/api/streams/cam", json={"preset": "edges"}, headers=headers)
        assert code == status, token
    code, _, _ = await request(live_node, "GET", "/api/streams")
    assert code == 401
    code, _, _ = await request(live_node, "GET", "/api/streams", headers={"Authorization": f"Bearer {OPERATOR}"})
    assert code == 200

    # ending a publish: its own token or the operator's
    code, _, _ = await request(live_node, "DELETE", publisher.location.removeprefix(live_node.url))
    assert code == 401
    code, _, _ = await request(live_node, "DELETE", publisher.location.removeprefix(live_node.url), headers={"Authorization": f"Bearer {OTHER}"})
    assert code == 403
    assert await viewer.close() == 200
    assert await publisher.close() == 200
    await wait_until(lambda: not live_node.hub.streams)

    logged = "\n".join(r.getMessage() for r in caplog.records)
    for token in (PUBLISH, OTHER, VIEW, OPERATOR):
        assert token not in logged


def test_public_bind_without_tokens_needs_insecure():
    proc = run_livegen("serve", "--host", "0.0.0.0", "--port", "1")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--insecure" in err
