"""The embedded synthetic dataset: real mp4 videos whose hidden class drives motion and sound.

Each class is a `Pattern`: a sprite shape moving with a motion pattern (what the
flow and RGB methods can find), and a tone with a class pitch and timbre whose
onsets (plus a click) fall on the sprite's bounces (what the audio methods can
find, temporally synced with the video). Nuisances keep random-init features
weak: random sprite colour, size, speed, amplitude, position and phase; a
coloured low-frequency background texture that drifts slowly; a distractor blob with
class-independent motion; pixel noise; audio noise, a class-independent hum and
a random global volume.

Videos are named in UCF101-like groups of up to 4 clips and the train/test
split is by group, as in UCF101; but each clip draws its own scene: clips
sharing backgrounds and colours let a probe memorise the few training scenes
instead of learning the class (tried: supervised test accuracy fell from ~0.9
to chance). Every video is drawn from `SeedSequence([seed, class, group, clip])`,
so it depends only on the seed and its name, and output is deterministic.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np

__all__ = ["CLASS_NAMES", "PATTERNS", "Pattern", "SynthConfig", "make_synthetic", "synth_clip"]

CLIPS_PER_GROUP = 4
MARKER = "synthetic.json"  # marks a synthetic output dir: config, classes, complete flag
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


class Pattern(NamedTuple):
    """One class: how the sprite moves, what it looks like, how it sounds."""

    motion: str  # key of _MOTIONS
    shape: str  # a shape known to _sdf
    semitone: float  # pitch above 220 Hz
    harmonics: tuple[float, ...]  # amplitude of harmonic 1, 2, ... (the timbre)

    @property
    def name(self) -> str:
        return f"{self.motion}_{self.shape}"


# The first `classes` patterns are used; the first six differ most.
PATTERNS: tuple[Pattern, ...] = (
    Pattern("bounce_h", "circle", 0.0, (1.0,)),
    Pattern("bounce_v", "square", 9.0, (1.0, 0.0, 0.33, 0.0, 0.2)),
    Pattern("orbit", "triangle", 18.0, (1.0, 0.5, 0.33, 0.25, 0.2)),
    Pattern("pulse", "plus", 4.0, (1.0, 0.0, 0.0, 0.6)),
    Pattern("zigzag", "diamond", 14.0, (0.6, 1.0, 0.6)),
    Pattern("gravity", "ring", 22.0, (1.0, 0.7)),
    Pattern("bounce_d", "xcross", 6.5, (1.0, 0.0, 0.8)),
    Pattern("figure8", "bar", 11.5, (1.0, 0.3, 0.0, 0.3, 0.0, 0.3)),
)
CLASS_NAMES: tuple[str, ...] = tuple(p.name for p in PATTERNS)


@dataclass(frozen=True)
class SynthConfig:
    """What to generate; validated on construction."""

    videos: int = 240  # total number of videos, a multiple of `classes`
    classes: int = 6  # number of classes, 2..len(PATTERNS)
    size: int = 64  # frame height = width in pixels (even)
    seconds: float = 4.0
    fps: int = 16
    sample_rate: int = 24000
    test_fraction: float = 0.3  # fraction of each class's groups in the test split
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.classes <= len(PATTERNS):
            raise ValueError(f"classes: must be between 2 and {len(PATTERNS)}, got {self.classes}")
        if self.videos < 2 * self.classes or self.videos % self.classes:
            raise ValueError(
                f"videos: must be a multiple of classes ({self.classes}) and at least "
                f"{2 * self.classes} (two groups per class), got {self.videos}"
            )
        if self.size < 16 or self.size % 2:
            raise ValueError(f"size: must be an even number >= 16, got {self.size}")
        if not 0.5 <= self.seconds <= 60:
            raise ValueError(f"seconds: must be between 0.5 and 60, got {self.seconds}")
        if not 4 <= self.fps <= 60:
            raise ValueError(f"fps: must be between 4 and 60, got {self.fps}")
        if self.sample_rate not in AAC_RATES:
            raise ValueError(f"sample_rate: must be one of {AAC_RATES} (AAC), got {self.sample_rate}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction: must be strictly between 0 and 1, got {self.test_fraction}")

    @property
    def frames(self) -> int:
        return round(self.seconds * self.fps)

    @property
    def samples(self) -> int:
        return round(self.seconds * self.sample_rate)


# ---------------------------------------------------------------- motion
# A motion maps phase p (cycles) to the sprite's offset (u, v) in [-1, 1] from
# its anchor and a scale factor; events are the phases (mod 1) of its bounces.


def _tri(p: np.ndarray) -> np.ndarray:
    """Triangle wave in [0, 1]: 1 at integer p, 0 at half-integer p."""
    return 2.0 * np.abs(p - np.floor(p) - 0.5)


class Motion(NamedTuple):
    uses_u: bool  # moves horizontally (so the anchor must leave room)
    uses_v: bool
    events: tuple[float, ...]  # phases in [0, 1) of bounces / onsets


_MOTIONS: dict[str, Motion] = {
    "bounce_h": Motion(True, False, (0.0, 0.5)),
    "bounce_v": Motion(False, True, (0.0, 0.5)),
    "bounce_d": Motion(True, True, (0.0, 0.5)),
    "orbit": Motion(True, True, (0.0, 0.5)),
    "zigzag": Motion(True, True, (0.0, 0.25, 0.5, 0.75)),
    "pulse": Motion(False, False, (0.25,)),
    "gravity": Motion(False, True, (0.0,)),
    "figure8": Motion(True, True, (0.25, 0.75)),
}
PULSE_DEPTH = 0.4  # pulse scale is 1 +- this


def trajectory(motion: str, p: np.ndarray, sign: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets u, v in [-1, 1] and scale for phases p [T]; sign (+-1) mirrors the pattern."""
    zero, one = np.zeros_like(p), np.ones_like(p)
    if motion == "bounce_h":
        return 2 * _tri(p) - 1, zero, one
    if motion == "bounce_v":
        return zero, 2 * _tri(p) - 1, one
    if motion == "bounce_d":
        u = 2 * _tri(p) - 1
        return u, sign * u, one
    if motion == "orbit":
        return np.cos(2 * np.pi * p), sign * np.sin(2 * np.pi * p), one
    if motion == "zigzag":  # crosses the frame once per cycle, going up and down twice
        return sign * (2 * _tri(p / 2) - 1), 0.5 * (2 * _tri(2 * p) - 1), one
    if motion == "pulse":
        return zero, zero, 1 + PULSE_DEPTH * np.sin(2 * np.pi * p)
    if motion == "gravity":
        f = p - np.floor(p)
        return zero, 1 - 8 * f * (1 - f), one  # v = +1 (bottom) at the bounce
    if motion == "figure8":
        return np.sin(2 * np.pi * p), sign * np.sin(4 * np.pi * p), one
    raise ValueError(f"motion: unknown {motion!r}")


def event_times(motion: str, phase0: float, freq: float, seconds: float, lead: float = 1.0) -> np.ndarray:
    """Times (s) in [-lead, seconds) where the motion bounces, for p(t) = phase0 + freq * t."""
    times = []
    for offset in _MOTIONS[motion].events:
        k = np.arange(np.ceil(phase0 - lead * freq - offset), np.ceil(phase0 + seconds * freq - offset))
        times.append((k + offset - phase0) / freq)
    return np.sort(np.concatenate(times))


# ---------------------------------------------------------------- shapes
# Signed distance (in sprite radii, negative inside) of shape at offsets x, y (in sprite radii).


def _sdf(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ax, ay = np.abs(x), np.abs(y)
    if shape == "circle":
        return np.hypot(x, y) - 1.0
    if shape == "square":
        return np.maximum(ax, ay) - 0.85
    if shape == "diamond":
        return (ax + ay - 1.15) / np.sqrt(2)
    if shape == "triangle":  # pointing up
        return np.maximum(np.maximum(0.5 * y, 0.866 * x - 0.5 * y), -0.866 * x - 0.5 * y) - 0.5
    if shape == "ring":
        return np.abs(np.hypot(x, y) - 0.75) - 0.27
    if shape in ("plus", "xcross"):
        if shape == "xcross":
            x, y = (x + y) / np.sqrt(2), (x - y) / np.sqrt(2)
            ax, ay = np.abs(x), np.abs(y)
        return np.minimum(np.maximum(ax - 1.0, ay - 0.33), np.maximum(ax - 0.33, ay - 1.0))
    if shape == "bar":
        return np.maximum(ax - 1.05, ay - 0.45)
    raise ValueError(f"shape: unknown {shape!r}")


# ---------------------------------------------------------------- parameters


class Scene(NamedTuple):
    """The look and background sound of one video."""

    bg_base: np.ndarray  # [3] in [0, 1]
    bg_amp: np.ndarray  # [J, 3] texture amplitudes
    bg_k: np.ndarray  # [J, 2] spatial frequencies, cycles per frame width
    bg_phase: np.ndarray  # [J]
    bg_drift: np.ndarray  # [2] frame widths per second
    sprite_rgb: np.ndarray  # [3]
    distractor_rgb: np.ndarray  # [3]
    hum_hz: float
    hum_level: float


class Clip(NamedTuple):
    """How the sprite moves and sounds in one video."""

    radius: float  # sprite radius, in frame widths
    freq: float  # motion cycles per second
    phase0: float
    sign: float
    amplitude: float  # fraction of the room left for motion
    anchor: np.ndarray  # [2] in [-1, 1] of the room left by the motion
    distractor_pos: np.ndarray  # [2] in [0, 1)
    distractor_vel: np.ndarray  # [2] frame widths per second
    pixel_noise: float
    pitch_jitter: float  # semitones
    decay: float  # onset decay time (s)
    audio_noise: float
    volume: float
    noise_seed: int  # for pixel and audio noise


def _scene(rng: np.random.Generator) -> Scene:
    bg_base = rng.uniform(0.15, 0.85, 3)
    sprite = rng.uniform(0, 1, 3)
    while np.abs(sprite - bg_base).max() < 0.45:  # keep the sprite visible
        sprite = rng.uniform(0, 1, 3)
    distractor = rng.uniform(0, 1, 3)
    while np.abs(distractor - bg_base).max() < 0.35:
        distractor = rng.uniform(0, 1, 3)
    return Scene(
        bg_base=bg_base,
        bg_amp=rng.uniform(-0.1, 0.1, (6, 3)),
        bg_k=rng.uniform(-3.5, 3.5, (6, 2)),
        bg_phase=rng.uniform(0, 2 * np.pi, 6),
        bg_drift=rng.uniform(-0.06, 0.06, 2),
        sprite_rgb=sprite,
        distractor_rgb=distractor,
        hum_hz=float(220 * 2 ** (rng.uniform(-6, 26) / 12)),
        hum_level=float(rng.uniform(0.0, 0.25)),
    )


def _clip(rng: np.random.Generator) -> Clip:
    angle = rng.uniform(0, 2 * np.pi)
    return Clip(
        radius=float(rng.uniform(0.1, 0.15)),
        freq=float(rng.uniform(0.5, 1.0)),
        phase0=float(rng.uniform(0, 1)),
        sign=float(rng.choice([-1.0, 1.0])),
        amplitude=float(rng.uniform(0.65, 1.0)),
        anchor=rng.uniform(-1, 1, 2),
        distractor_pos=rng.uniform(0, 1, 2),
        distractor_vel=rng.uniform(0.15, 0.45) * np.array([np.cos(angle), np.sin(angle)]),
        pixel_noise=float(rng.uniform(0.0, 0.04)),
        pitch_jitter=float(rng.uniform(-0.75, 0.75)),
        decay=float(rng.uniform(0.1, 0.2)),
        audio_noise=float(rng.uniform(0.005, 0.08)),
        volume=float(rng.uniform(0.25, 0.8)),
        noise_seed=int(rng.integers(2**62)),
    )


# ---------------------------------------------------------------- rendering


def render_frames(pattern: Pattern, scene: Scene, clip: Clip, size: int, t: np.ndarray) -> np.ndarray:
    """Frames uint8 [T,H,W,3] at times t [T] (s)."""
    f32 = np.float32
    coords = ((np.arange(size) + 0.5) / size).astype(f32)  # pixel centres in frame widths
    y, x = coords[None, :, None], coords[None, None, :]  # [1,H,1], [1,1,W]
    tt = t.astype(f32)[:, None]  # [T,1]

    # background: drifting coloured cosines, cos(a + b) = cos a cos b - sin a sin b, so separable
    kx, ky, phase = scene.bg_k[:, 0, None, None], scene.bg_k[:, 1, None, None], scene.bg_phase[:, None, None]
    ax = 2 * np.pi * kx * (coords - scene.bg_drift[0] * tt) + phase  # [J,T,W]
    ay = 2 * np.pi * ky * (coords - scene.bg_drift[1] * tt)  # [J,T,H]
    rows = np.concatenate([np.cos(ay), -np.sin(ay)]).transpose(1, 2, 0).astype(f32)  # [T,H,2J]
    amp = np.concatenate([scene.bg_amp, scene.bg_amp])  # [2J,3]
    cols = np.concatenate([np.cos(ax), np.sin(ax)])[..., None] * amp[:, None, None, :]  # [2J,T,W,3]
    cols = cols.transpose(1, 0, 2, 3).reshape(len(t), len(amp), size * 3).astype(f32)  # [T,2J,W*3]
    img = (rows @ cols).reshape(len(t), size, size, 3) + scene.bg_base.astype(f32)  # [T,H,W,3]

    # distractor: a soft blob moving straight, reflecting off the walls; the gaussian is separable
    d = clip.distractor_pos[:, None] + clip.distractor_vel[:, None] * t[None]  # [2,T]
    d = (0.1 + 0.8 * _tri(d / 2 + 0.5)).astype(f32)  # reflect into [0.1, 0.9]
    sigma2 = f32(2 * 0.06**2)
    gx = np.exp(-((coords[None] - d[0][:, None]) ** 2) / sigma2)  # [T,W]
    gy = np.exp(-((coords[None] - d[1][:, None]) ** 2) / sigma2)  # [T,H]
    alpha = (0.75 * gy[:, :, None] * gx[:, None, :])[..., None]  # [T,H,W,1]
    img += alpha * (scene.distractor_rgb.astype(f32) - img)

    # sprite: anti-aliased shape following the class motion
    motion = _MOTIONS[pattern.motion]
    u, v, scale = trajectory(pattern.motion, clip.phase0 + clip.freq * t, clip.sign)  # [T] each
    margin = clip.radius * (1 + PULSE_DEPTH) + 1.5 / size
    room = 0.5 - margin  # half-range the sprite centre may use
    travel = clip.amplitude * room  # motion half-range, frame widths
    cx = (0.5 + clip.anchor[0] * (room - travel * motion.uses_u) + travel * u).astype(f32)[:, None, None]
    cy = (0.5 + clip.anchor[1] * (room - travel * motion.uses_v) + travel * v).astype(f32)[:, None, None]
    rad = (clip.radius * scale).astype(f32)[:, None, None]  # [T,1,1]
    sdf = _sdf(pattern.shape, (x - cx) / rad, (y - cy) / rad) * (rad * size)  # [T,H,W] in px
    alpha = np.clip(0.5 - sdf, 0.0, 1.0)[..., None]  # [T,H,W,1]
    img += alpha * (scene.sprite_rgb.astype(f32) - img)

    rng = np.random.default_rng([clip.noise_seed, 0])
    img += f32(clip.pixel_noise) * rng.standard_normal(img.shape, dtype=f32)
    return (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def render_audio(pattern: Pattern, scene: Scene, clip: Clip, seconds: float, sample_rate: int) -> np.ndarray:
    """Mono audio float32 [N] in [-1, 1]: class tone with onsets and clicks on the bounces."""
    n = round(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    rng = np.random.default_rng([clip.noise_seed, 1])
    f0 = 220.0 * 2 ** ((pattern.semitone + clip.pitch_jitter) / 12)
    tone = sum(a * np.sin(2 * np.pi * (h + 1) * f0 * t) for h, a in enumerate(pattern.harmonics) if a)
    tone = tone / np.sqrt(sum(a * a for a in pattern.harmonics) / 2)  # unit RMS

    # each bounce restarts the tone (decaying onset) and adds a short noise click
    envelope, clicks = np.full(n, 0.12), np.zeros(n)
    for te in event_times(pattern.motion, clip.phase0, clip.freq, seconds):
        i = max(0, int(np.ceil(te * sample_rate)))
        envelope[i:] += np.exp(-(t[i:] - te) / clip.decay)
        j = min(n, i + round(0.015 * sample_rate))
        if j > i:
            clicks[i:j] += np.exp(-(t[i:j] - te) / 0.003) * rng.uniform(-1, 1, j - i)

    hum = scene.hum_level * np.sin(2 * np.pi * scene.hum_hz * t)
    signal = 0.5 * tone * envelope + 0.6 * clicks + hum + rng.normal(0.0, clip.audio_noise * 4, n)
    signal = clip.volume * signal / max(1e-6, np.abs(signal).max())
    return signal.astype(np.float32)


def synth_clip(class_index: int, group: int, clip: int, cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 [T,H,W,3] and audio float32 [N] of one video, before encoding."""
    pattern = PATTERNS[class_index]
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, class_index, group, clip]))
    scene, params = _scene(rng), _clip(rng)
    t = np.arange(cfg.frames) / cfg.fps
    frames = render_frames(pattern, scene, params, cfg.size, t)
    audio = render_audio(pattern, scene, params, cfg.seconds, cfg.sample_rate)
    return frames, audio


# ---------------------------------------------------------------- writing


def write_mp4(path: Path, frames: np.ndarray, audio: np.ndarray, fps: int, sample_rate: int) -> None:
    """Write frames uint8 [T,H,W,3] (H.264, yuv420p) and mono audio float32 [N] (AAC) to path."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height = frames.shape[2], frames.shape[1]
        video.pix_fmt = "yuv420p"
        # deterministic output: one thread, and no mbtree (its asm reads uninitialised
        # memory here: the same frames encoded twice differed)
        video.codec_context.thread_count = 1
        video.options = {"crf": "18", "preset": "veryfast", "x264-params": "mbtree=0"}
        sound = container.add_stream("aac", rate=sample_rate, layout="mono")
        sound.codec_context.thread_count = 1
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode())
        for start in range(0, len(audio), 1024):
            chunk = audio[None, start : start + 1024]  # [1,n]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = sample_rate, start, Fraction(1, sample_rate)
            container.mux(sound.encode(frame))
        container.mux(sound.encode())


class VideoSpec(NamedTuple):
    class_index: int
    group: int  # 1-based, as in UCF101 names
    clip: int  # 1-based
    split: str  # "train" | "test"

    @property
    def video_id(self) -> str:
        name = CLASS_NAMES[self.class_index]
        return f"{name}/v_{name}_g{self.group:02d}_c{self.clip:02d}"


def plan(cfg: SynthConfig) -> list[VideoSpec]:
    """Every video to write, class by class; the first groups of each class are the test split."""
    per_class = cfg.videos // cfg.classes
    clips_per_group = max(1, min(CLIPS_PER_GROUP, per_class // 2))
    groups = -(-per_class // clips_per_group)
    test_groups = min(groups - 1, max(1, round(cfg.test_fraction * groups)))
    specs = []
    for c in range(cfg.classes):
        for i in range(per_class):
            group, clip = i // clips_per_group + 1, i % clips_per_group + 1
            specs.append(VideoSpec(c, group, clip, "test" if group <= test_groups else "train"))
    return specs


def _write_one(args: tuple[VideoSpec, SynthConfig, Path]) -> None:
    spec, cfg, videos = args
    frames, audio = synth_clip(spec.class_index, spec.group, spec.clip, cfg)
    path = videos / f"{spec.video_id}.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(path, frames, audio, cfg.fps, cfg.sample_rate)


def _write_lists(out: Path, specs: list[VideoSpec], cfg: SynthConfig) -> None:
    """labels.csv and UCF101-style splits/{classInd,trainlist01,testlist01}.txt."""
    lines = ["video_id,label,split"] + [f"{s.video_id},{CLASS_NAMES[s.class_index]},{s.split}" for s in specs]
    (out / "labels.csv").write_text("\n".join(lines) + "\n")
    splits = out / "splits"
    splits.mkdir(exist_ok=True)
    (splits / "classInd.txt").write_text("".join(f"{c + 1} {CLASS_NAMES[c]}\n" for c in range(cfg.classes)))
    train = [f"{s.video_id}.mp4 {s.class_index + 1}\n" for s in specs if s.split == "train"]
    (splits / "trainlist01.txt").write_text("".join(train))
    (splits / "testlist01.txt").write_text("".join(f"{s.video_id}.mp4\n" for s in specs if s.split == "test"))


def _remove_earlier(out: Path) -> None:
    """Delete the files an earlier (even interrupted) run wrote to ``out``, as the config in its
    marker plans them, and the folders it made once they are empty: anything else stays."""
    try:
        old = SynthConfig(**json.loads((out / MARKER).read_text())["config"])
    except (ValueError, TypeError, KeyError) as e:
        raise FileExistsError(f"{out / MARKER}: unreadable ({e}); not overwriting {out}") from None
    videos = out / "videos"
    for spec in plan(old):
        (videos / f"{spec.video_id}.mp4").unlink(missing_ok=True)
    for name in ("labels.csv", "splits/classInd.txt", "splits/trainlist01.txt", "splits/testlist01.txt"):
        (out / name).unlink(missing_ok=True)
    for folder in [*(videos / name for name in CLASS_NAMES[: old.classes]), videos, out / "splits"]:
        with contextlib.suppress(OSError):  # not empty (files of the user's), or gone
            folder.rmdir()


def make_synthetic(out_dir: str | Path, cfg: SynthConfig = SynthConfig(), workers: int = 1) -> Path:
    """Write the synthetic dataset to out_dir and return it.

    Layout: videos/<class>/v_<class>_gGG_cCC.mp4, labels.csv (video_id,label,split),
    splits/{classInd,trainlist01,testlist01}.txt and synthetic.json (config,
    class names, and "complete": true once everything is written). out_dir must
    be missing, empty, or an earlier (even interrupted) synthetic output, whose
    files are replaced (files it did not write stay). `workers` > 1 renders with a process pool; the output does not
    depend on it.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise FileExistsError(f"{out}: not empty and not a synthetic dataset (no {MARKER}); not overwriting")
        _remove_earlier(out)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    marker = {"config": asdict(cfg), "classes": list(CLASS_NAMES[: cfg.classes]), "complete": False}
    (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    specs = plan(cfg)
    jobs = [(s, cfg, videos) for s in specs]
    if workers > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            pool.map(_write_one, jobs, chunksize=4)
    else:
        for job in jobs:
            _write_one(job)
    _write_lists(out, specs, cfg)
    (out / MARKER).write_text(json.dumps({**marker, "complete": True}, indent=2) + "\n")
    return out
