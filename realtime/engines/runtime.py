"""One engine runner for every network: TensorRT → onnxruntime TensorRT/CUDA providers → onnxruntime CPU.

* **TensorRT** (``tensorrt`` Python API, FP16 where the GPU has fast FP16, device buffers through ``pycuda``
  or ``cuda-python``): the serialized engine is cached under ``cache_dir()/tensorrt`` with a key made of
  the ONNX file's SHA-256, the TensorRT version and the GPU name, so a changed network, a TensorRT upgrade
  or another GPU each build a new engine (``realtime-face models build-engines`` builds them ahead).
* **onnxruntime GPU** providers when the installed onnxruntime has them (``onnxruntime-gpu``), with
  onnxruntime's own TensorRT engine cache in the same folder.
* **onnxruntime CPU** everywhere else, with a fixed number of threads (the pipeline runs other stages on
  the other cores).

The runner records which path it took and why the faster ones were not taken (``backend``, ``reason``);
``realtime-face doctor`` prints that.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from realtime.errors import BadInputError, MissingResourceError
from realtime.paths import cache_dir

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "onnxruntime-gpu", "cpu")


@dataclass(frozen=True)
class BackendChoice:
    backend: str
    """"tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda" or "onnxruntime-cpu"."""
    reason: str
    """Why this path (and why not the faster ones)."""
    gpu: str = ""


def _gpu_name_pycuda() -> str:
    import pycuda.driver as cuda

    cuda.init()
    if cuda.Device.count() < 1:
        raise RuntimeError("no CUDA device")
    return str(cuda.Device(0).name())


def _gpu_name_cuda_python() -> str:
    from cuda import cudart  # type: ignore[import-not-found]

    err, n = cudart.cudaGetDeviceCount()
    if int(err) != 0 or n < 1:
        raise RuntimeError("no CUDA device")
    err, props = cudart.cudaGetDeviceProperties(0)
    name = props.name
    return (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).rstrip("\x00")


def cuda_buffer_api() -> tuple[str, str]:
    """(api, gpu name) of the first usable CUDA binding ("pycuda" or "cuda-python"); raises when none."""
    problems = []
    for api, fn in (("pycuda", _gpu_name_pycuda), ("cuda-python", _gpu_name_cuda_python)):
        try:
            return api, fn()
        except ImportError:
            problems.append(f"{api} not installed")
        except Exception as exc:  # a driver without a GPU raises its own error types
            problems.append(f"{api}: {exc}")
    raise RuntimeError("; ".join(problems))


def probe_backend(prefer: str = "auto") -> BackendChoice:
    """The path an engine would take on this machine, without loading a network."""
    if prefer not in BACKENDS:
        raise BadInputError(f"unknown engine backend '{prefer}' (choose from {', '.join(BACKENDS)})")
    why: list[str] = []
    if prefer in ("auto", "tensorrt"):
        try:
            import tensorrt as trt  # type: ignore[import-not-found]

            api, gpu = cuda_buffer_api()
            return BackendChoice("tensorrt", f"TensorRT {trt.__version__} with {api} buffers on {gpu}", gpu)
        except ImportError:
            why.append("TensorRT: the tensorrt Python package is not installed")
        except Exception as exc:
            why.append(f"TensorRT: {exc}")
    if prefer in ("auto", "onnxruntime-gpu", "tensorrt"):
        import onnxruntime as ort

        available = ort.get_available_providers()
        for provider, name in (
            ("TensorrtExecutionProvider", "onnxruntime-tensorrt"),
            ("CUDAExecutionProvider", "onnxruntime-cuda"),
        ):
            if provider in available:
                return BackendChoice(name, "; ".join([*why, f"onnxruntime has {provider}"]))
        why.append(f"onnxruntime {ort.__version__} has no GPU provider (providers: {', '.join(available)})")
    if prefer == "cpu":
        why.append("CPU requested")
    return BackendChoice("onnxruntime-cpu", "; ".join(why))


def engine_cache_key(onnx_bytes: bytes, trt_version: str, gpu_name: str) -> str:
    """``<sha256 of the ONNX, 16 hex>-trt<version>-<gpu slug>``: a new engine for any change of the three."""
    digest = hashlib.sha256(onnx_bytes).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower() or "gpu"
    return f"{digest}-trt{trt_version}-{slug}"


def read_metadata(onnx_path: Path) -> dict[str, str]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    # Graph optimisations off: only the metadata is wanted, not a runnable session.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for invalid files
        raise BadInputError(f"cannot load engine {onnx_path}: {str(exc).splitlines()[0]}") from None
    return dict(sess.get_modelmeta().custom_metadata_map)


class _TensorRTSession:
    """A TensorRT engine with one input ``image`` and one output ``coeffs`` and preallocated buffers."""

    def __init__(
        self, onnx_path: Path, cache: Path, fp16: bool, max_batch: int, input_size: int, api: str, gpu: str
    ) -> None:
        import tensorrt as trt

        self.trt = trt
        self.api = api
        self._logger = trt.Logger(trt.Logger.WARNING)
        onnx_bytes = onnx_path.read_bytes()
        key = engine_cache_key(onnx_bytes, trt.__version__, gpu)
        cache.mkdir(parents=True, exist_ok=True)
        plan_path = cache / f"{onnx_path.stem}-{key}{'-fp16' if fp16 else ''}.plan"
        self.plan_path = plan_path
        self.built = False
        if plan_path.is_file():
            plan = plan_path.read_bytes()
        else:
            plan = self._build(onnx_bytes, fp16, max_batch, input_size)
            tmp = plan_path.with_suffix(".tmp")
            tmp.write_bytes(plan)
            tmp.replace(plan_path)
            self.built = True
        self._init_cuda()
        runtime = trt.Runtime(self._logger)
        self.engine = runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not load the cached engine {plan_path}")
        self.context = self.engine.create_execution_context()
        self.max_batch = max_batch
        self.out_dim = int(self.engine.get_tensor_shape("coeffs")[-1])
        self.in_shape = (3, input_size, input_size)
        self._alloc()

    def _build(self, onnx_bytes: bytes, fp16: bool, max_batch: int, size: int) -> bytes:
        trt = self.trt
        builder = trt.Builder(self._logger)
        flags = 0
        if (
            hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
            and int(trt.__version__.split(".")[0]) < 10
        ):
            flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(onnx_bytes):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT cannot parse the ONNX: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
        if fp16 and builder.platform_has_fast_fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        profile.set_shape("image", (1, 3, size, size), (1, 3, size, size), (max_batch, 3, size, size))
        config.add_optimization_profile(profile)
        log.info("building TensorRT engine (fp16=%s); this takes a minute once per GPU", fp16)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise RuntimeError("TensorRT failed to build the engine")
        return bytes(plan)

    def _init_cuda(self) -> None:
        if self.api == "pycuda":
            import pycuda.driver as cuda

            cuda.init()
            self._cuda = cuda
            self._ctx = cuda.Device(0).retain_primary_context()
            self._ctx.push()
        else:
            from cuda import cudart

            self._cudart = cudart

    def _alloc(self) -> None:
        n_in = self.max_batch * int(np.prod(self.in_shape))
        n_out = self.max_batch * self.out_dim
        if self.api == "pycuda":
            cuda = self._cuda
            self.h_in = cuda.pagelocked_empty(n_in, np.float32)
            self.h_out = cuda.pagelocked_empty(n_out, np.float32)
            self.d_in = cuda.mem_alloc(self.h_in.nbytes)
            self.d_out = cuda.mem_alloc(self.h_out.nbytes)
            self.stream = cuda.Stream()
            self._ctx.pop()
        else:
            cudart = self._cudart
            self.h_in = np.empty(n_in, np.float32)
            self.h_out = np.empty(n_out, np.float32)
            _, self.d_in = cudart.cudaMalloc(self.h_in.nbytes)
            _, self.d_out = cudart.cudaMalloc(self.h_out.nbytes)
            _, self.stream = cudart.cudaStreamCreate()

    def run(self, x: np.ndarray) -> np.ndarray:
        b = x.shape[0]
        if b > self.max_batch:
            return np.concatenate([self.run(x[i : i + self.max_batch]) for i in range(0, b, self.max_batch)])
        n_in = x.size
        n_out = b * self.out_dim
        self.h_in[:n_in] = x.ravel()
        self.context.set_input_shape("image", tuple(x.shape))
        if self.api == "pycuda":
            cuda = self._cuda
            self._ctx.push()
            try:
                cuda.memcpy_htod_async(self.d_in, self.h_in[:n_in], self.stream)
                self.context.set_tensor_address("image", int(self.d_in))
                self.context.set_tensor_address("coeffs", int(self.d_out))
                self.context.execute_async_v3(self.stream.handle)
                cuda.memcpy_dtoh_async(self.h_out[:n_out], self.d_out, self.stream)
                self.stream.synchronize()
            finally:
                self._ctx.pop()
        else:
            cudart = self._cudart
            kind_h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            kind_d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            cudart.cudaMemcpyAsync(self.d_in, self.h_in.ctypes.data, n_in * 4, kind_h2d, self.stream)
            self.context.set_tensor_address("image", int(self.d_in))
            self.context.set_tensor_address("coeffs", int(self.d_out))
            self.context.execute_async_v3(int(self.stream))
            cudart.cudaMemcpyAsync(self.h_out.ctypes.data, self.d_out, n_out * 4, kind_d2h, self.stream)
            cudart.cudaStreamSynchronize(self.stream)
        return self.h_out[:n_out].reshape(b, self.out_dim).copy()

    def close(self) -> None:
        if self.api == "pycuda":
            self._ctx.push()
            try:
                self.d_in.free()
                self.d_out.free()
            finally:
                self._ctx.pop()
                self._ctx.detach()
        else:
            self._cudart.cudaFree(self.d_in)
            self._cudart.cudaFree(self.d_out)
            self._cudart.cudaStreamDestroy(self.stream)


class EngineRunner:
    """Runs one ONNX network on the best available path (see the module docstring). Context manager.

    ``run(images)`` takes (B, 3, S, S) float32 and returns (B, K) float32. Thread-safe (one call at a time).
    """

    def __init__(
        self,
        onnx_path: str | Path,
        prefer: str = "auto",
        threads: int = 1,
        fp16: bool = True,
        max_batch: int = 4,
        engine_cache: Path | None = None,
    ) -> None:
        path = Path(onnx_path)
        if not path.is_file():
            raise MissingResourceError(f"engine file not found: {path}")
        self.path = path
        self.metadata = read_metadata(path)
        crop = json.loads(self.metadata.get("realtime_face.crop", "{}"))
        self.input_size = int(crop.get("input_size", 64))
        self.threads = threads
        self._lock = threading.Lock()
        self._trt: _TensorRTSession | None = None
        self._ort: Any = None
        choice = probe_backend(prefer)
        cache = engine_cache or (cache_dir() / "tensorrt")
        if choice.backend == "tensorrt":
            try:
                api, gpu = cuda_buffer_api()
                self._trt = _TensorRTSession(path, cache, fp16, max_batch, self.input_size, api, gpu)
                self.backend = "tensorrt"
                self.reason = choice.reason + (" (engine built)" if self._trt.built else " (cached engine)")
                return
            except Exception as exc:
                log.warning("TensorRT path failed, falling back to onnxruntime: %s", exc)
                choice = probe_backend("onnxruntime-gpu" if prefer == "auto" else prefer)
                choice = BackendChoice(choice.backend, f"TensorRT failed ({exc}); {choice.reason}")
        self._ort = self._ort_session(path, choice, cache, fp16)
        actual = self._ort.get_providers()[0]
        self.backend = {
            "TensorrtExecutionProvider": "onnxruntime-tensorrt",
            "CUDAExecutionProvider": "onnxruntime-cuda",
        }.get(actual, "onnxruntime-cpu")
        self.reason = choice.reason
        if self.backend != choice.backend:
            self.reason += f"; onnxruntime fell back to {actual}"
        if self.backend == "onnxruntime-cpu":
            self.reason = (
                self.reason + "; " if self.reason else ""
            ) + f"onnxruntime CPU, {threads} thread(s)"

    def _ort_session(self, path: Path, choice: BackendChoice, cache: Path, fp16: bool) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers: list[Any] = []
        if choice.backend == "onnxruntime-tensorrt":
            (cache / "onnxruntime").mkdir(parents=True, exist_ok=True)
            providers.append(
                (
                    "TensorrtExecutionProvider",
                    {
                        "trt_fp16_enable": fp16,
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(cache / "onnxruntime"),
                    },
                )
            )
        if choice.backend in ("onnxruntime-tensorrt", "onnxruntime-cuda"):
            providers.append("CUDAExecutionProvider")
        providers.append("CPUExecutionProvider")
        try:
            return ort.InferenceSession(str(path), so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for invalid models
            raise BadInputError(f"cannot load engine {path}: {exc}") from None

    def run(self, images: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(images, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (3, self.input_size, self.input_size):
            raise ValueError(f"expected (B, 3, {self.input_size}, {self.input_size}) images, got {x.shape}")
        with self._lock:
            if self._trt is not None:
                return self._trt.run(x)
            return self._ort.run(None, {"image": x})[0]

    def close(self) -> None:
        with self._lock:
            if self._trt is not None:
                self._trt.close()
                self._trt = None
            self._ort = None

    def __enter__(self) -> EngineRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
