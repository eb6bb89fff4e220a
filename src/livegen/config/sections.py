"""The sections of the node's settings (`server`, `rtc`, `engine`, …), each a frozen pydantic
model that refuses unknown keys; `livegen.config` assembles them into `Settings` and loads them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    cors_origins: list[str] = Field(default_factory=lambda: ["*"])
    """Origins whose pages may call WHIP/WHEP and the API from a browser; "*" for any."""
    web_dir: Path | None = None
    """Folder of the web pages; default: the bundled `web/`."""
    uploads_dir: Path = Path("uploads")
    """Where uploaded backgrounds and logos are kept (relative to the working directory)."""
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    drain_s: float = Field(30.0, ge=0, le=86_400)
    """On SIGTERM/SIGINT: how long live streams may go on (new publishes get 503, `/ready` 503)
    before the node closes them and exits; 0: close at once."""


class IceServer(_Section):
    url: str
    username: str | None = None
    credential: str | None = None

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        if not url.startswith(("stun:", "turn:", "turns:")):
            raise ValueError(f"{url!r} is not a stun:, turn: or turns: URL")
        return url


class RtcSettings(_Section):
    ice_servers: list[IceServer] = Field(default_factory=list)
    """STUN/TURN servers for the node's peers, also offered to clients in `Link` headers; each a
    URL or {url, username, credential}. Empty on a LAN or loopback."""
    max_streams: int = Field(8, ge=1, le=1024)
    """Publishers the node accepts at once; `/ready` answers 503 when all are taken."""
    max_viewers_per_stream: int = Field(32, ge=1, le=10_000)
    host_addresses: list[str] = Field(default_factory=list)
    """Local addresses to gather ICE host candidates on (e.g. ["127.0.0.1"]); empty: every
    interface but loopback."""
    udp_ports: tuple[int, int] | None = None
    """Inclusive range of UDP ports for WebRTC media, e.g. [40000, 40100]; default: any port."""
    advertised_addresses: list[str] = Field(default_factory=list)
    """Addresses to offer clients besides the local ones, e.g. the public IP of a 1:1 NAT."""
    max_width: int = Field(1920, ge=16, le=8192)
    max_height: int = Field(1080, ge=16, le=8192)
    """Publishers sending larger pictures are refused (their session is ended)."""
    max_fps: float = Field(60.0, gt=0, le=240)
    """Frames arriving faster than this are dropped at ingest; an offer declaring more is 422."""
    connect_timeout_s: float = Field(20.0, gt=0, le=600)
    """A peer that has not connected this long after its offer was answered is dropped."""

    @field_validator("udp_ports")
    @classmethod
    def _port_range(cls, ports: tuple[int, int] | None) -> tuple[int, int] | None:
        if ports is not None and not (1024 <= ports[0] <= ports[1] <= 65535):
            raise ValueError("must be [low, high] with 1024 <= low <= high <= 65535")
        return ports

    @field_validator("advertised_addresses")
    @classmethod
    def _ip_addresses(cls, addresses: list[str]) -> list[str]:
        import ipaddress

        for address in addresses:
            ipaddress.ip_address(address)  # ValueError names the bad one
        return addresses

    @field_validator("ice_servers", mode="before")
    @classmethod
    def _plain_urls(cls, servers: object) -> object:
        if isinstance(servers, list):
            return [{"url": s} if isinstance(s, str) else s for s in servers]
        return servers


class OutputSettings(_Section):
    """How processed video leaves the node."""

    mode: Literal["encode_once", "per_viewer"] = "encode_once"
    """encode_once: one encoder per stream and codec, packets fanned out to every viewer.
    per_viewer: aiortc encodes for each viewer (costs CPU per viewer; kept for comparison)."""
    codecs: list[Literal["H264", "VP8"]] = Field(default_factory=lambda: ["H264", "VP8"], min_length=1)
    """Video codecs offered to viewers, most preferred first."""
    h264_encoder: Literal["auto", "libx264", "h264_nvenc"] = "auto"
    """auto: NVENC when this PyAV/FFmpeg build and the machine have it, else libx264."""
    bitrate_bps: int | None = Field(None, ge=100_000, le=50_000_000)
    """Fixed video bitrate; default scales with the picture: 2.5 Mbit/s at 1280×720."""
    max_bitrate_bps: int = Field(8_000_000, ge=100_000, le=50_000_000)
    x264_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "ultrafast"
    keyframe_interval_s: float = Field(10.0, gt=0, le=600)
    min_keyframe_gap_s: float = Field(0.5, ge=0, le=60)
    """Keyframes asked for by new viewers and PLIs come at most this often per stream."""
    viewer_queue_packets: int = Field(30, ge=2, le=1000)
    """Encoded frames a viewer may fall behind before it skips to the next keyframe."""
    audio_sync: bool = True
    """Hold relayed audio back by the video's processing delay so lips match the voice."""


class AuthSettings(_Section):
    """Bearer tokens. With none configured the node is open (fine on loopback only)."""

    publish_tokens: dict[str, str] = Field(default_factory=dict)
    """Stream name (or "*" for any stream) → the token its publisher must present."""
    viewer_tokens: dict[str, str] = Field(default_factory=dict)
    """Stream name (or "*") → the token a viewer must present; empty: watching is open."""
    operator_token: str | None = None
    """Token for operator actions: API writes on any stream, ending any session."""

    @field_validator("publish_tokens", "viewer_tokens")
    @classmethod
    def _long_enough(cls, tokens: dict[str, str]) -> dict[str, str]:
        for stream, token in tokens.items():
            if len(token) < 8:
                raise ValueError(f"the token for {stream!r} is shorter than 8 characters")
        return tokens

    @property
    def enabled(self) -> bool:
        return bool(self.publish_tokens or self.viewer_tokens or self.operator_token)


class EngineSettings(_Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto` takes CUDA when torch sees a GPU, else the CPU."""
    cpu_threads: int = Field(2, ge=1, le=64)
    """Threads for CPU-only helpers (person segmentation) that run beside device work."""
    budget_ms: float = Field(100.0, gt=0, le=10_000)
    """Per-frame budget: frames that take longer to process are counted as over budget, and
    under overload the node sheds work so that a frame's in-node latency p95 stays within it."""
    max_chain: int = Field(8, ge=1, le=64)
    """Most effects in one stream's chain (a longer preset or PATCH is refused with 422)."""
    worker_load: float = Field(0.9, gt=0.0, le=1.0)
    """Share of each second the device worker may be busy; divided fairly among the streams."""
    shed: bool = True
    """Shed work (effect quality, processed resolution, frame rate) of the streams over their
    share of the worker and under overload; False: never shed (frames then wait and drop)."""
    default_preset: str = "passthrough"
    """Preset a publisher gets when it names none: by default its own picture, untouched."""
    presets_dir: Path | None = None
    """Folder of preset YAML files; default: the bundled `configs/presets/`."""
    assets_dir: Path | None = None
    """Folder of images and videos presets refer to; default: the bundled `configs/assets/`."""


class DiffusionSettings(_Section):
    """Which diffusion model the node loads and how it runs it (the diffusion stage)."""

    enabled: bool = True
    """False: no generator is built; `generated` backgrounds and `stylize` fall back."""
    model: str = "stabilityai/sd-turbo"
    """A local folder in diffusers layout (unet/, text_encoder/, tokenizer/, scheduler/) or a
    Hugging Face id already in the local cache (`livegen models pull ID` puts it there)."""
    taesd: str | None = "madebyollin/taesd"
    """The tiny autoencoder (folder or cached id) used to encode and decode frames; ignored when
    the model folder's own vae/ already is an `AutoencoderTiny`."""
    cache_dir: Path | None = None
    """Hugging Face cache to look in; default: the hub's own (HF_HUB_CACHE / HF_HOME)."""
    allow_cpu: bool = False
    """Run on the CPU when there is no GPU (fp32, far below frame rate: tests and demos only)."""
    compile: bool = False
    """torch.compile the UNet (opt-in: minutes of compiling at start; falls back to eager)."""
    cuda_graphs: bool = False
    """Replay the UNet as a CUDA graph per batch shape (opt-in; falls back when capture fails)."""
    channels_last: bool = True
    """channels-last memory format on CUDA (usually faster convolutions)."""
    prompt_cache: int = Field(64, ge=1, le=4096)
    """Prompt embeddings kept in memory; a prompt seen before swaps in without encoding."""
    max_batch: int = Field(8, ge=1, le=64)
    """Most frames (streams × steps) one UNet call may carry; larger groups are split."""
    controlnet: str | None = None
    """ControlNetModel for `controlnet: canny`: a folder (config.json + weights) or a Hugging Face
    id already in the local cache, of diffusion.model's family (e.g.
    thibaud/controlnet-sd21-canny-diffusers for sd-turbo); `livegen models pull ID` fetches one.
    None: `controlnet: canny` is refused with 422."""
    controlnet_depth: str | None = None
    """ControlNetModel for `controlnet: depth` (e.g. thibaud/controlnet-sd21-depth-diffusers);
    needs depth_model too. None: `controlnet: depth` is refused with 422."""
    depth_model: str | None = None
    """A transformers depth-estimation model (folder or cached id, e.g. Intel/dpt-hybrid-midas)
    that makes the depth pictures for controlnet_depth."""


class RelaySettings(_Section):
    """Outputs pushed to platforms and servers (RTMP/RTMPS, WHIP) and the holding slate."""

    grace_s: float = Field(30.0, ge=0, le=3600)
    """How long a stream whose publisher dropped stays up on a slate, so outputs, recordings
    and viewers continue when the publisher comes back; 0: it ends at once."""
    slate_image: str | None = None
    """Image shown while the publisher is away (an upload ref or a file in the assets folder);
    default: the last frame dimmed, with `slate_message`."""
    slate_message: str = "Be right back"
    max_outputs_per_stream: int = Field(8, ge=1, le=64)
    queue_packets: int = Field(600, ge=30, le=10_000)
    """Packets an output may fall behind before it drops its backlog and resumes at a keyframe."""
    max_keyframe_interval_s: float = Field(2.0, gt=0, le=10)
    """Longest keyframe interval while any output or recording runs (platforms want ≤ 2 s)."""
    connect_timeout_s: float = Field(10.0, gt=0, le=120)
    backoff_base_s: float = Field(1.0, gt=0, le=60)
    backoff_cap_s: float = Field(30.0, gt=0, le=3600)


class UploadSettings(_Section):
    """S3-compatible object storage for recordings (AWS S3, MinIO, R2). Credentials come from
    the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), never from this file."""

    endpoint: str | None = None
    """e.g. http://127.0.0.1:9000 for MinIO; None: AWS's own endpoint for `region`."""
    bucket: str
    prefix: str = ""
    region: str = "us-east-1"
    part_bytes: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024, le=5 * 1024 * 1024 * 1024)
    """Multipart part size (S3's minimum for every part but the last is 5 MiB)."""
    keep_local: bool = False
    """Keep the local file after its upload completed and was verified."""


class RecordingSettings(_Section):
    auto: bool = False
    """Record every stream from its first frame."""
    dir: Path = Path("recordings")
    fragment_s: float = Field(2.0, gt=0, le=2.0)
    """Longest fragment of the fragmented MP4: what a crash can lose at most."""
    segment_s: float | None = Field(None, gt=0)
    """Start a new file every this many seconds (None: one file per recording)."""
    max_bytes: int | None = Field(None, gt=0)
    """Keep the recordings folder under this size, deleting the oldest finished files first."""
    upload: UploadSettings | None = None


class ClusterSettings(_Section):
    """Many nodes behind one endpoint, coordinated through Redis (`livegen.cluster`): a WHIP
    publish to a full node is redirected (307) to the least-loaded node with room, a WHEP watch
    to the node that holds the stream, and a stream name is published once in the cluster."""

    redis_url: str | None = Field(None, pattern=r"^(redis|rediss|unix)://")
    """e.g. redis://10.0.0.5:6379/0 (rediss:// for TLS, unix:///path.sock); None: no cluster."""
    public_url: str | None = Field(None, pattern=r"^https?://[^?#]+$")
    """This node's base URL as clients reach it, where other nodes redirect them, e.g.
    https://node-2.example.com; default: http://<server.host>:<server.port>."""
    node_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    """This node's name in the cluster; default: the host name and a random suffix per start."""
    heartbeat_s: float = Field(2.0, gt=0, le=60)
    """How often the node refreshes its record and its streams' claims in Redis."""
    ttl_s: float = Field(10.0, gt=0, le=600)
    """A node that stops refreshing (crashed, cut off) drops out of routing, and its stream
    names become free, this long after its last heartbeat."""
    timeout_s: float = Field(1.0, gt=0, le=30)
    """Longest wait for one Redis call; past it the node decides on its own (serves locally)."""
    key_prefix: str = Field("livegen", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    """Start of every key the node writes, so clusters can share one Redis."""

    @model_validator(mode="after")
    def _ttl_outlives_heartbeats(self) -> ClusterSettings:
        if self.ttl_s < 2 * self.heartbeat_s:
            raise ValueError(f"ttl_s ({self.ttl_s:g}) must be at least twice heartbeat_s ({self.heartbeat_s:g})")
        return self


class JobSettings(_Section):
    """Files processed by the node's effect chains through the job API (`livegen.jobs`)."""

    data_dir: Path = Path("jobs")
    """The job database (`jobs.sqlite3`) and each job's output under `<job id>/`."""
    concurrency: int = Field(1, ge=1, le=16)
    """Jobs processed at once (all below live streams on the device worker)."""
    max_attempts: int = Field(3, ge=1, le=100)
    """Tries of one job (transient errors, a node that stopped mid-job) before it is `failed`."""
    retry_base_s: float = Field(5.0, gt=0, le=3600)
    retry_cap_s: float = Field(300.0, gt=0, le=86_400)
    """Backoff with full jitter between a job's tries after a transient error."""
    webhook_secret: SecretStr | None = None
    """Key of the `Livegen-Signature` HMAC on webhooks; a job with a webhook_url needs it."""
    webhook_allow_private: bool = False
    """Let webhooks reach loopback, private, link-local and other non-public addresses (a
    receiver on the node's own network). Off: a webhook_url that names or resolves to none but
    such addresses is refused (422), and every delivery connects to public addresses only."""
    webhook_timeout_s: float = Field(10.0, gt=0, le=120)
    webhook_backoff_base_s: float = Field(2.0, gt=0, le=3600)
    webhook_backoff_cap_s: float = Field(600.0, gt=0, le=86_400)
    webhook_give_up_s: float = Field(3600.0, gt=0, le=7 * 86_400)
    """A webhook not delivered this long after the job ended is given up (`failed`)."""
    max_page: int = Field(100, ge=1, le=1000)
    """Most jobs one `GET /api/jobs` answers with."""
    retention_s: float | None = Field(7 * 86_400.0, ge=1)
    """How long a job that ended is kept (its row, its output under data_dir, its idempotency
    key) once its webhook is through; then it is deleted (404). None: kept forever."""

    @model_validator(mode="after")
    def _caps(self) -> JobSettings:
        if self.retry_cap_s < self.retry_base_s or self.webhook_backoff_cap_s < self.webhook_backoff_base_s:
            raise ValueError("a backoff cap must not be below its base")
        return self


class GrpcSettings(_Section):
    """The gRPC frame API (`livegen.v1.FrameService`, see proto/livegen/v1/livegen.proto): clients
    send frames through an effect chain, or ask for generated ones. It listens beside the HTTP
    server in the same process and takes the same tokens (`process`: the operator's or any
    publish token)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    """0: any free port (tests; the node logs which)."""
    max_streams: int = Field(4, ge=1, le=256)
    """Calls (ProcessStream and GenerateStream together) at once; more are RESOURCE_EXHAUSTED."""
    depth: int = Field(4, ge=1, le=64)
    """Frames of one call on the device worker at once: more keeps the worker busier, fewer
    answers each frame sooner."""
    max_width: int = Field(1920, ge=16, le=8192)
    max_height: int = Field(1080, ge=16, le=8192)
    """Larger frames (sent or asked for) are INVALID_ARGUMENT; they also bound message sizes."""
    idle_timeout_s: float = Field(30.0, gt=0, le=3600)
    """A call whose client sends nothing and reads nothing this long, while the node owes it
    nothing, ends with DEADLINE_EXCEEDED and gives its place back."""
