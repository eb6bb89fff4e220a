"""Settings layers (defaults → YAML → env → validate), presets, and start-up failures."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from livegen.config import load_settings
from livegen.effects.base import EffectContext
from livegen.engine.presets import PresetLibrary
from livegen.errors import ConfigError
from livegen.media.assets import AssetStore
from livegen.resources import bundled_dir


def test_defaults_file_env_and_overrides_layer_in_order(tmp_path):
    assert load_settings(env={}).server.port == 8080
    config = tmp_path / "node.yaml"
    config.write_text("server:\n  port: 9001\nengine:\n  budget_ms: 50\n")
    settings = load_settings(config, env={"LIVEGEN_SERVER__PORT": "9002", "LIVEGEN_CHROMIUM": "/x"})
    assert settings.server.port == 9002  # env beats the file
    assert settings.engine.budget_ms == 50  # the file beats defaults
    assert settings.server.host == "127.0.0.1"  # defaults fill the rest
    settings = load_settings(config, env={"LIVEGEN_SERVER__PORT": "9002"}, overrides={"server": {"port": 1}})
    assert settings.server.port == 1
    lists = load_settings(env={"LIVEGEN_RTC__HOST_ADDRESSES": '["127.0.0.1", "::1"]'})
    assert lists.rtc.host_addresses == ["127.0.0.1", "::1"]
    outputs = load_settings(env={"LIVEGEN_OUTPUTS": '{"cam": ["rtmp://a/live/k"]}', "LIVEGEN_OUTPUTS__SHOW": "[https://b/whip/s]"})
    assert outputs.outputs == {"cam": ["rtmp://a/live/k"], "show": ["https://b/whip/s"]}


@pytest.mark.parametrize(
    ("yaml_text", "env", "expected"),
    [
        ("server:\n  port: 70000\n", {}, "server.port"),
        ("server:\n  prot: 80\n", {}, "server.prot: unknown key"),
        ("engine:\n  device: tpu\n", {}, "engine.device"),
        ("rtc:\n  ice_servers: [http://x]\n", {}, "rtc.ice_servers"),
        ("", {"LIVEGEN_ENGINE__BUDGET_MS": "-1"}, "LIVEGEN_ENGINE__BUDGET_MS: engine.budget_ms"),
        ("- just\n- a list\n", {}, "top level must be a mapping"),
        ("server: [unclosed\n", {}, "not valid YAML"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, yaml_text, env, expected):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_settings(config, env=env)
    assert expected in err.value.detail


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.yaml", env={})


def test_bundled_presets_load_and_bad_presets_stop_startup(tmp_path):
    assets = AssetStore(tmp_path / "uploads", bundled_dir("configs") / "assets")
    library = PresetLibrary.from_folder(bundled_dir("configs") / "presets", "edges", EffectContext(assets=assets))
    assert {"passthrough", "grayscale", "edges", "blur", "office", "studio", "news", "generated"} <= set(
        library.names())
    (tmp_path / "broken.yaml").write_text("effects:\n  - name: edges\n    params: {strength: -1}\n")
    with pytest.raises(ConfigError, match=r"broken.yaml.*edges.strength"):
        PresetLibrary.from_folder(tmp_path, "broken")
    (tmp_path / "broken.yaml").write_text("effects:\n  - name: sparkles\n")
    with pytest.raises(ConfigError, match="unknown effect 'sparkles'"):
        PresetLibrary.from_folder(tmp_path, "broken")
    (tmp_path / "broken.yaml").write_text("effects:\n  - name: grayscale\n")
    with pytest.raises(ConfigError, match="default_preset"):
        PresetLibrary.from_folder(tmp_path, "edges")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_livegen(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    environment = {**os.environ, **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "livegen", *args], env=environment, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw,
    )


def test_serve_refuses_bad_config_with_the_key_named(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("engine:\n  default_preset: nope\n")
    proc = run_livegen("serve", "--config", str(config))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "engine.default_preset" in err and "Traceback" not in err
    proc = run_livegen("serve", env={"LIVEGEN_SERVER__PORT": "eighty"})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "LIVEGEN_SERVER__PORT: server.port" in err


def test_serve_starts_answers_and_stops(tmp_path):
    port = free_port()
    proc = run_livegen(
        "serve", "--port", str(port), env={"LIVEGEN_ENGINE__DEVICE": "cpu", "LIVEGEN_ENGINE__DEFAULT_PRESET": "edges"}
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "node did not come up"
                time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/presets", timeout=2) as r:
            assert b'"default": "edges"' in r.read()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode in (0, -15)


def test_doctor_reports_the_device():
    out = subprocess.run(
        [sys.executable, "-m", "livegen", "doctor"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "torch" in out and "device" in out and "libx264" in out


def test_default_yaml_documents_exactly_the_defaults():
    from livegen.config import Settings, default_config_path

    assert load_settings(default_config_path(), env={}) == Settings()
