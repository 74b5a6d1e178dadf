"""AnimatorPipeline: LivePortrait inference composed from its networks (diffusers style).

The source is prepared once (F and M, keypoints, lip normalisation, all kept on the device);
driving motion then streams through `generate`, which runs the per-frame recipe and W + G on
batches of B frames with f_s computed once per job and broadcast along the batch. Defaults
are fp32 and eager; autocast (fp16/bf16 on CUDA, bf16 on CPUs with native bf16 units such as
AVX512-BF16/AMX) and torch.compile are explicit options.

Two backends run F, M and W + G: torch (the reference, parity-tested) and ONNX Runtime
(`backend="onnxruntime"`: an `OrtEngine` over a `dynamics weights export-onnx` folder; the
small S/R MLPs and the keypoint recipe stay in torch). The seam is `appearance`, `kp_info` and
`warp_decode`; the batcher, metrics and streaming do not know which backend runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from services.animator import motion
from services.animator.frames import frames_from_kp_info, to_uint8
from services.animator.keypoints import KpInfo, kp_info_from_motion_output
from services.animator.motion_types import (
    DrivingBatch,
    DrivingFrame,
    MotionOptions,
    Retargeters,
    SourceMotion,
)
from services.animator.weights import DEFAULT_INPUT_SIZE, load_models
from services.common.errors import InvalidInputError

logger = logging.getLogger(__name__)

BACKEND = "torch"
BACKENDS = ("torch", "onnxruntime")


@functools.cache
def cpu_has_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX), so oneDNN runs bf16
    convolutions faster than fp32; on other CPUs bf16 is emulated and slower."""
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return True
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def check_autocast(device: torch.device, dtype: torch.dtype | None) -> None:
    """Raise ValueError unless `dtype` autocast is supported on `device` (None = fp32: always)."""
    if dtype is None or device.type == "cuda":
        return
    if device.type == "cpu" and dtype == torch.bfloat16:
        if not cpu_has_bf16():
            raise ValueError(
                "bf16 on CPU needs native bf16 units (AVX512-BF16 or AMX); "
                "this CPU has neither, use fp32"
            )
        return
    raise ValueError(
        f"autocast in {dtype} is only supported on CUDA (and bf16 on CPUs with AVX512-BF16/AMX)"
    )


@dataclass(frozen=True)
class Ratios:
    """Eye (left, right) and lip open ratios of one face (SPEC §5.5)."""

    eye_left: float = 0.0
    eye_right: float = 0.0
    lip: float = 0.0


@dataclass
class SourceState:
    """Everything a job needs from its source image, on the compute device."""

    f_s: torch.Tensor  # 1×C×D×H×W appearance volume
    motion: SourceMotion  # batch 1
    kp_info: KpInfo
    options: MotionOptions
    lip_delta: torch.Tensor | None  # 1×K×3 lip normalisation, or None
    reference: motion.MotionReference | None = None  # set from driving frame 0
    frames_done: int = 0


@dataclass
class AnimatorOutput:
    """One generated batch: uint8 frames plus the tensors parity tests compare."""

    indices: list[int]
    images: np.ndarray  # B×H×W×3 uint8 RGB
    x_d: torch.Tensor  # B×K×3 driving keypoints fed to W
    image: torch.Tensor  # B×3×H×W float in (0, 1), G's output
    occlusion_map: torch.Tensor | None  # B×1×h×w
    deformation: torch.Tensor | None  # B×D×h×w×3 (None on the onnxruntime backend)
    random_weights: bool = False
    seconds: float = 0.0


@dataclass
class AnimatorPipeline:
    """The seven networks plus how to run them."""

    F: nn.Module
    M: nn.Module
    W: nn.Module
    G: nn.Module
    stitching: nn.Module
    lip: nn.Module
    eye: nn.Module
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    input_size: int = DEFAULT_INPUT_SIZE
    batch_size: int = 8
    autocast_dtype: torch.dtype | None = None
    provenance: str = "unknown"
    fingerprint: str = ""  # weights.model_fingerprint of the loaded files, config and input size
    config_name: str = ""
    weights_dtype: torch.dtype = torch.float32  # storage dtype of F/M/W/G
    num_kp: int = 21
    engine: Any = None  # ort_backend.OrtEngine when the backend is onnxruntime, else None
    cuda_graphs: bool = False  # W/G compiled with CUDA graphs (reduce-overhead/max-autotune)
    device_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _held: threading.local = field(default_factory=threading.local, repr=False)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        check_autocast(self.device, self.autocast_dtype)
        if self.random_weights:
            logger.warning("animator runs on RANDOM weights: every generated frame is noise")

    @classmethod
    def from_weights(
        cls,
        weights_dir: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        batch_size: int = 8,
        autocast_dtype: torch.dtype | None = None,
        compile: bool = False,
        input_size: int | None = None,
        config=None,
        channels_last: bool = False,
        compile_mode: str = "default",
        backend: str = "torch",
        onnx_dir: str | Path | None = None,
        ort_providers: Sequence[str] | None = None,
        trt_cache_dir: str | Path | None = None,
    ) -> AnimatorPipeline:
        """Load the upstream checkpoint files (strict) and build the pipeline.

        `dtype` is the storage dtype of F/M/W/G (fp32 default; fp16/bf16 only on CUDA, where it
        implies autocast in that dtype); `autocast_dtype` runs F/M/W/G under autocast with fp32
        weights (fp16/bf16 on CUDA; bf16 on a CPU with AVX512-BF16/AMX, about 3x faster there
        than fp32). The small S/R MLPs always stay fp32. `input_size` defaults to the
        config's `image_size`, else 256. `channels_last` (CUDA only) stores G's 2-D convolutions
        NHWC, which tensor cores prefer in half precision; outputs are unchanged up to rounding.

        `backend="onnxruntime"` runs F, M and W+G from the export in `onnx_dir` (default
        WEIGHTS_DIR/onnx; refused when it was made from other weights) on the first available of
        `ort_providers` (default TensorRT, CUDA, CPU); the device follows that provider, and
        dtype/autocast/compile do not apply (the export's precision does).
        """
        if backend not in BACKENDS:
            raise ValueError(f"unknown animator backend {backend!r}; choose {BACKENDS}")
        if backend == "onnxruntime":
            return cls._from_export(
                weights_dir,
                onnx_dir=onnx_dir,
                providers=ort_providers,
                trt_cache_dir=trt_cache_dir,
                batch_size=batch_size,
                input_size=input_size,
                config=config,
                device=device,
            )
        device = torch.device(device)
        if dtype != torch.float32:
            if device.type != "cuda":
                raise ValueError(f"weights in {dtype} need a CUDA device")
            autocast_dtype = autocast_dtype or dtype
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes per batch size
        models = load_models(
            weights_dir, device=device, dtype=dtype, config=config, input_size=input_size
        )
        num_kp = int(models.config["model_params"]["motion_extractor_params"].get("num_kp", 21))
        pipe = cls(
            F=models.F,
            M=models.M,
            W=models.W,
            G=models.G,
            stitching=models.stitching.float(),
            lip=models.lip.float(),
            eye=models.eye.float(),
            device=device,
            input_size=models.input_size,
            batch_size=batch_size,
            autocast_dtype=autocast_dtype,
            provenance=models.provenance,
            fingerprint=models.fingerprint,
            config_name=models.config_name,
            weights_dtype=dtype,
            num_kp=num_kp,
        )
        if channels_last and device.type == "cuda":
            pipe.G = pipe.G.to(memory_format=torch.channels_last)
        if compile:
            pipe.W = torch.compile(pipe.W, mode=compile_mode)  # reduce-overhead: CUDA graphs
            pipe.G = torch.compile(pipe.G, mode=compile_mode)
            pipe.cuda_graphs = device.type == "cuda" and compile_mode != "default"
        return pipe

    @classmethod
    def _from_export(
        cls,
        weights_dir,
        *,
        onnx_dir,
        providers,
        trt_cache_dir,
        batch_size,
        input_size,
        config,
        device,
    ) -> AnimatorPipeline:
        from services.animator import ort_backend
        from services.animator.onnx_export import load_export

        models = load_models(weights_dir, device="cpu", config=config, input_size=input_size)
        folder = Path(onnx_dir) if onnx_dir else models.weights_dir / "onnx"
        export = load_export(folder, models.fingerprint)  # refuses a stale export
        engine = ort_backend.OrtEngine(
            export,
            providers=ort_backend.parse_providers(providers),
            batch_size=batch_size,
            device_id=torch.device(device).index or 0,
            trt_cache_dir=trt_cache_dir,
        )
        if torch.device(device).type != engine.device.type:
            logger.warning(
                "ANIMATOR_DEVICE %s, but onnxruntime runs on %s (%s)",
                device,
                engine.device,
                engine.provider,
            )
        num_kp = int(models.config["model_params"]["motion_extractor_params"].get("num_kp", 21))
        dev = engine.device
        return cls(
            F=models.F,
            M=models.M,
            W=models.W,
            G=models.G,
            stitching=models.stitching.float().to(dev),
            lip=models.lip.float().to(dev),
            eye=models.eye.float().to(dev),
            device=dev,
            input_size=models.input_size,
            batch_size=batch_size,
            provenance=models.provenance,
            fingerprint=models.fingerprint,
            config_name=models.config_name,
            weights_dtype=torch.float16 if export.precision == "fp16" else torch.float32,
            num_kp=num_kp,
            engine=engine,
        )

    @property
    def backend(self) -> str:
        """'torch', or 'onnxruntime/<execution provider>'."""
        return BACKEND if self.engine is None else self.engine.label

    @contextlib.contextmanager
    def on_device(self) -> Iterator[None]:
        """Hold the device lock. The time it is held, not the wait for it, is added to the
        calling thread's `held_seconds()`: busy-time metrics then count each device second
        once, however many jobs queue for the device."""
        with self.device_lock:
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self._held.seconds = self.held_seconds() + time.perf_counter() - t0

    def held_seconds(self) -> float:
        """Seconds this thread has held the device lock so far (see `on_device`)."""
        return getattr(self._held, "seconds", 0.0)

    @property
    def random_weights(self) -> bool:
        return self.provenance == "random"

    @property
    def compute_dtype(self) -> torch.dtype:
        """The float type F/M/W/G compute in: the autocast dtype if set, else the weights'."""
        return self.autocast_dtype or self.weights_dtype

    @property
    def retargeters(self) -> Retargeters:
        return Retargeters(stitching=self.stitching, lip=self.lip, eye=self.eye)

    def autocast(self):
        """Autocast context on the pipeline's device when `autocast_dtype` is set, else a no-op."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def prepare_images(self, images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 crops (H×W×3 or N×H×W×3) → N×3×S×S float in [0, 1] (bilinear resize)."""
        batch = [images] if isinstance(images, np.ndarray) and images.ndim == 3 else list(images)
        if not batch:
            raise InvalidInputError("no images given", reason="bad_image")
        out = []
        for img in batch:
            img = np.asarray(img)
            bad = img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3
            if bad or min(img.shape[:2]) < 2:
                raise InvalidInputError(
                    f"expected an H×W×3 uint8 RGB crop, got {img.dtype} {img.shape}",
                    reason="bad_image",
                )
            if img.shape[:2] != (self.input_size, self.input_size):
                img = cv2.resize(img, (self.input_size, self.input_size))
            out.append(img)
        x = torch.from_numpy(np.clip(np.stack(out).astype(np.float32) / 255.0, 0, 1))  # N×S×S×3
        if self.device.type == "cuda":  # page-locked host memory: asynchronous copy
            return x.pin_memory().to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        return x.permute(0, 3, 1, 2).to(self.device)  # N×3×S×S

    @torch.no_grad()
    def kp_info(self, images: torch.Tensor) -> KpInfo:
        """M on N×3×S×S prepared images → post-processed KpInfo (fp32)."""
        if self.engine is not None:
            return kp_info_from_motion_output(self.engine.motion(images))
        with self.autocast():
            raw = self.M(images)  # dict of N×k
        return kp_info_from_motion_output({k: v.float() for k, v in raw.items()})

    @torch.no_grad()
    def appearance(self, images: torch.Tensor) -> torch.Tensor:
        """F on N×3×S×S prepared images → f_s N×C×D×H×W (fp32)."""
        if self.engine is not None:
            return self.engine.appearance(images)
        with self.autocast():
            return self.F(images).float()

    def prepare_source(
        self,
        crop: np.ndarray | torch.Tensor,
        ratios: Ratios | None = None,
        options: MotionOptions | None = None,
    ) -> SourceState:
        """Source crop (256×256 RGB uint8, or a prepared 1×3×S×S tensor) → SourceState.

        F and M run once; x_s, R_s and the lip-normalisation delta are kept on the device.
        """
        ratios = ratios or Ratios()
        options = options or MotionOptions()
        if isinstance(crop, torch.Tensor):
            image = crop.to(self.device)  # 1×3×S×S
        else:
            image = self.prepare_images(crop)  # 1×3×S×S
        with self.on_device():
            info = self.kp_info(image)  # 1×…
            f_s = self.appearance(image)  # 1×C×D×H×W
        rot = info.rotation()  # 1×3×3
        src = SourceMotion(
            kp=info.kp,
            rot=rot,
            exp=info.exp,
            scale=info.scale,
            t=info.t,
            x_s=info.transformed(),
            eye_ratio=torch.tensor([[ratios.eye_left, ratios.eye_right]], device=self.device),
            lip_ratio=torch.tensor([[ratios.lip]], device=self.device),
        )
        lip_delta = motion.source_lip_delta(src, options, self.retargeters)
        return SourceState(f_s=f_s, motion=src, kp_info=info, options=options, lip_delta=lip_delta)

    def extract_motion(
        self,
        crops: np.ndarray | Sequence[np.ndarray],
        ratios: Sequence[Ratios] | None = None,
        start_index: int = 0,
    ) -> list[DrivingFrame]:
        """Driving crops → per-frame motion (M in batches of `batch_size`)."""
        crops = list(crops) if not isinstance(crops, np.ndarray) or crops.ndim == 4 else [crops]
        ratios = list(ratios) if ratios is not None else [Ratios()] * len(crops)
        if len(ratios) != len(crops):
            raise InvalidInputError("one ratio triple per crop is needed", reason="bad_motion")
        frames: list[DrivingFrame] = []
        for lo in range(0, len(crops), self.batch_size):
            images = self.prepare_images(crops[lo : lo + self.batch_size])
            with self.on_device():
                info = self.kp_info(images)
            frames += frames_from_kp_info(info, ratios[lo : lo + self.batch_size], start_index + lo)
        return frames

    def generate(
        self, state: SourceState, motions: Sequence[DrivingFrame], start_index: int | None = None
    ) -> Iterator[np.ndarray]:
        """Yield one H×W×3 uint8 frame per driving motion, in order, computed B at a time."""
        index = state.frames_done if start_index is None else start_index
        for lo in range(0, len(motions), self.batch_size):
            batch = self.run_batch(state, motions[lo : lo + self.batch_size], index + lo)
            yield from batch.images

    @torch.no_grad()
    def run_batch(
        self, state: SourceState, motions: Sequence[DrivingFrame], start_index: int
    ) -> AnimatorOutput:
        """The per-frame recipe for up to B frames: keypoints, S/R, W, G, uint8."""
        t0 = time.perf_counter()
        with self.on_device():
            x_d = self.job_keypoints(state, motions, start_index)  # B×K×3
            out = self.warp_decode(state.f_s, state.motion.x_s.expand_as(x_d), x_d, start_index)
        out.seconds = time.perf_counter() - t0
        return out

    @torch.no_grad()
    def job_keypoints(
        self, state: SourceState, motions: Sequence[DrivingFrame], start_index: int
    ) -> torch.Tensor:
        """Steps 1-3 of the recipe for one job's frames → x_d B×K×3 (inside on_device).

        Frame 0 of a job fixes its `MotionReference`, so a job's batches must come in order.
        """
        # 1. validate
        self._validate(state, motions, start_index)
        drv = DrivingBatch.from_frames(motions, self.device)
        # 2. keypoints (motion recipe); frame 0 fixes the job's reference
        if state.reference is None:
            state.reference = motion.make_reference(state.motion, drv.head(1), state.options)
        x_d = motion.driving_keypoints(state.motion, drv, state.reference, state.options)
        x_d = motion.apply_expression_friendly(
            x_d, state.motion, state.reference, state.options
        )  # B×K×3
        # 3. stitching / retargeting (S, R_eye, R_lip) and the driving multiplier
        x_d = motion.stitch_and_retarget(
            x_d, state.motion, drv, state.options, self.retargeters, lip_delta=state.lip_delta
        )
        state.frames_done = start_index + len(motions)
        return x_d

    @torch.no_grad()
    def warp_decode(
        self, f_s: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor, start_index: int
    ) -> AnimatorOutput:
        """W + G + uint8 for B frames (f_s 1 or B×C×D×H×W; x_s, x_d B×K×3); inside on_device."""
        if self.engine is not None:  # W+G fused in one graph: only the frame comes back
            image = self.engine.warp_decode(f_s, x_s, x_d)  # B×3×H×W
            return AnimatorOutput(
                indices=list(range(start_index, start_index + x_d.shape[0])),
                images=to_uint8(image),
                x_d=x_d,
                image=image,
                occlusion_map=None,
                deformation=None,
                random_weights=self.random_weights,
            )
        if self.cuda_graphs:  # a new step: earlier replays' outputs may now be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        with self.autocast():
            # 4. warp (W): an f_s of batch 1 is broadcast along the batch inside W
            warped = self.W(f_s, kp_driving=x_d, kp_source=x_s)
            # 5. decode (G)
            image = self.G(feature=warped["out"]).float()  # B×3×H×W
        if self.cuda_graphs:  # graph-owned memory: copy what outlives this step
            image = image.clone()
            warped = {k: v.clone() for k, v in warped.items() if k != "out"}
        # 6. to uint8 with truncation (SPEC §15.4)
        images = to_uint8(image)  # B×H×W×3
        occlusion = warped.get("occlusion_map")
        return AnimatorOutput(
            indices=list(range(start_index, start_index + x_d.shape[0])),
            images=images,
            x_d=x_d,
            image=image,
            occlusion_map=None if occlusion is None else occlusion.float(),
            deformation=warped["deformation"].float(),
            random_weights=self.random_weights,
        )

    def _validate(self, state: SourceState, motions: Sequence[DrivingFrame], start: int) -> None:
        if not motions:
            raise InvalidInputError("no driving motion given", reason="bad_motion")
        if state.reference is None and start != 0:
            raise InvalidInputError(
                "the first generated batch must start at driving frame 0", reason="bad_motion"
            )
        for frame in motions:
            if frame.expression.shape != (self.num_kp, 3):
                raise InvalidInputError(
                    f"frame {frame.index}: expression must be {self.num_kp}×3", reason="bad_motion"
                )

    def warm_up(self) -> float:
        """Run frames end to end (source = mid-grey, driving = itself) before serving: one
        frame on CPU, a full batch on CUDA (cuDNN picks its kernels for that shape); seconds."""
        t0 = time.perf_counter()
        crop = np.full((self.input_size, self.input_size, 3), 128, dtype=np.uint8)
        state = self.prepare_source(crop, Ratios(0.3, 0.3, 0.1))
        frames = self.extract_motion(crop[None], [Ratios(0.3, 0.3, 0.1)])
        if self.device.type == "cuda":
            frames = [dataclasses.replace(frames[0], index=i) for i in range(self.batch_size)]
        list(self.generate(state, frames, 0))
        seconds = time.perf_counter() - t0
        logger.info(
            "animator warm-up (%s backend): one frame in %.2f s on %s",
            self.backend,
            seconds,
            self.device,
        )
        return seconds
