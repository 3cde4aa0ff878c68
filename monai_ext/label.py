# Copyright (c) weaklabel-bundles contributors.
# Licensed under the Apache License, Version 2.0.
"""Serve a trained bundle with MONAI Label 0.8.5 (``monaibundle`` app), offline, and query it.

MONAI Label's ``BundleInferTask`` reads a bundle's ``configs/inference.json`` (``network_def``,
``preprocessing``, ``inferer``, ``postprocessing``), ``models/model.pt`` (loaded with ``strict=False``)
and ``configs/metadata.json`` (first input / output keys, labels from the output ``channel_def``,
dimension = ``len(spatial_shape)`` of the input, task type from the bundle folder name). Three things
in our bundles do not survive that path unchanged, so :func:`deploy_bundle` serves an adapted copy:

- ``postprocessing`` ends with a file writer (``SaveInstancesd``) that needs dataset metadata MONAI
  Label does not provide: every ``Save*`` transform is dropped;
- MONAI Label keeps a ``(1, H, W)`` 2D prediction as a 3D array and writes it with ITK, which cannot
  write int64, nor int32 / float to PNG: :class:`MonaiLabelInstanced` squeezes the channel, casts the
  ids to int32 and makes the answer a TIFF (int32: ids above 255 or 65535 are kept) unless the client
  asks for another ``result_extension`` / ``result_dtype``;
- MONAI Label transposes the array when writing (MONAI readers give ``(W, H)``): a bundle whose
  preprocessing yields ``(H, W)`` is detected at deploy time (``layout``) and transposed back.

The original bundle is never modified: the served copy has its own ``configs/`` and links (or copies)
everything else, so a retrained ``models/model.pt`` is picked up by a running server.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, MapTransform

from monai_ext.errors import DataError

__all__ = [
    "MONAILABEL_VERSION",
    "APP_NAME",
    "SERVER_CONF",
    "BundleSpec",
    "Deployment",
    "MonaiLabelInstanced",
    "MonaiLabelServer",
    "label_postprocessing",
    "apply_overrides",
    "inspect_bundle",
    "check_weights",
    "probe_layout",
    "download_app",
    "deploy_bundle",
    "server_env",
    "free_port",
    "infer",
    "predict_local",
    "read_label_bytes",
]

logger = logging.getLogger(__name__)

MONAILABEL_VERSION = "0.8.5"
APP_NAME = "monaibundle"
#: ``--conf`` pairs that keep the monaibundle app offline: local bundles only, no SAM2 weights, no trainers.
SERVER_CONF: dict[str, str] = {"zoo_source": "github", "sam2": "false", "skip_trainers": "true"}
#: inference.json keys MONAI Label reads (it takes the last one present of each pair).
_POST_KEYS = ("postprocessing", "post_transforms")
_PRE_KEYS = ("preprocessing", "pre_transforms")
#: bundle folder names that make MONAI Label pick a task type other than segmentation.
_OTHER_TYPES = ("deepedit", "deepgrow", "detection", "classification")
_CONFIG_FILES = ("inference.json", "inference.yaml")
_SKIP_ON_DEPLOY = ("configs", "eval", "runs", "logs", "__pycache__")


# ------------------------------------------------------------------------------------------------
# post-processing adapter (runs inside the MONAI Label server)
# ------------------------------------------------------------------------------------------------
class MonaiLabelInstanced(MapTransform):
    """Last post-transform of a served bundle: instance ids as int32, in the layout MONAI Label writes.

    MONAI Label (``Restored`` then ``Writer``) keeps a ``(1, H, W)`` 2D prediction as 3D and
    transposes the array before ITK writes it, so this transform drops the channel of a 2D
    prediction, orients it so that the written file has the image's ``(rows, columns)``, casts to
    int32 (ITK has no int64 images) and sets the answer format unless the request chose one:
    ``.tif`` int32 for 2D, ``.nii.gz`` int32 for 3D. A requested 8/16-bit format (``.png``) gets
    ``uint16`` when every id fits, else a clear error instead of wrapped ids.

    Args:
        keys: the prediction key (metadata's first output).
        spatial_dims: 2 or 3 (metadata's input ``spatial_shape`` length).
        layout: ``"xy"`` when the bundle's arrays are ``(W, H)`` (MONAI's ``LoadImaged``), ``"yx"``
            when they are ``(H, W)``.
        ref_key: the image key, whose ``spatial_shape`` MONAI Label's ``Restored`` compares with.
        extension: default answer format.
    """

    backend = ["numpy"]

    def __init__(
        self,
        keys: str = "pred",
        spatial_dims: int = 2,
        layout: str = "xy",
        ref_key: str = "image",
        extension: str | None = None,
    ) -> None:
        super().__init__(keys)
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if layout not in ("xy", "yx"):
            raise ValueError(f"layout must be 'xy' or 'yx', got {layout!r}")
        self.spatial_dims = spatial_dims
        self.layout = layout
        self.ref_key = ref_key
        self.extension = extension or (".tif" if spatial_dims == 2 else ".nii.gz")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            pred = d[key]
            pred = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
            while pred.ndim > self.spatial_dims and pred.shape[0] == 1:
                pred = pred[0]
            if pred.ndim != self.spatial_dims:
                raise ValueError(f"'{key}' must be one channel of {self.spatial_dims}D instance ids, got shape {pred.shape}")
            if self.layout == "yx":
                pred = pred.T
            pred = np.rint(pred) if np.issubdtype(pred.dtype, np.floating) else pred
            if pred.size and (pred.min() < np.iinfo(np.int32).min or pred.max() > np.iinfo(np.int32).max):
                raise ValueError(f"'{key}' holds ids outside int32")
            d[key] = np.ascontiguousarray(pred.astype(np.int32))
            # MONAI Label's Restored resizes when this shape differs from the image's spatial_shape.
            ref = d.get(self.ref_key)
            meta = getattr(ref, "meta", None) if ref is not None else d.get(f"{self.ref_key}_meta_dict")
            if isinstance(meta, dict):
                meta["spatial_shape"] = np.asarray(pred.shape)
            ext = d.get("result_extension") or self.extension
            d["result_extension"] = ext
            if not d.get("result_dtype"):
                if ext.lower() in (".png", ".jpg", ".jpeg", ".bmp"):
                    top = int(pred.max()) if pred.size else 0
                    if pred.size and (pred.min() < 0 or top > 65535):
                        raise ValueError(f"{top} instances do not fit a 16-bit {ext}; ask for result_extension .tif")
                    d["result_dtype"] = "uint16"
                else:
                    d["result_dtype"] = "int32"
        return d


MonaiLabelInstanceD = MonaiLabelInstanceDict = MonaiLabelInstanced


def label_postprocessing(postprocessing: Any, keys: str = "pred", spatial_dims: int = 2, layout: str = "xy") -> Compose:
    """The bundle's post-processing without its ``Save*`` writers, ending with :class:`MonaiLabelInstanced`.

    Args:
        postprocessing: the bundle's ``Compose`` (or a list of transforms, or None).
        keys, spatial_dims, layout: see :class:`MonaiLabelInstanced`.
    """
    if postprocessing is None:
        transforms: list[Any] = []
    elif isinstance(postprocessing, Compose):
        transforms = list(postprocessing.transforms)
    elif isinstance(postprocessing, (list, tuple)):
        transforms = list(postprocessing)
    else:
        transforms = [postprocessing]
    kept = [t for t in transforms if not type(t).__name__.startswith("Save")]
    dropped = [type(t).__name__ for t in transforms if type(t).__name__.startswith("Save")]
    if dropped:
        logger.info("MONAI Label serving: dropped file writers %s from postprocessing", dropped)
    return Compose(kept + [MonaiLabelInstanced(keys=keys, spatial_dims=spatial_dims, layout=layout)])


# ------------------------------------------------------------------------------------------------
# bundle inspection
# ------------------------------------------------------------------------------------------------
@dataclass
class BundleSpec:
    """What MONAI Label will read from a bundle (see :func:`inspect_bundle`)."""

    path: Path
    name: str
    config_file: Path
    image_key: str
    pred_key: str
    dimension: int
    num_channels: int
    labels: dict[str, int]
    task_type: str = "segmentation"
    version: str | None = None
    description: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


def _load_config(path: Path) -> dict[str, Any]:
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(path.read_text()) or {}
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the config ({exc})", path) from exc


def apply_overrides(cfg: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` with ``overrides`` merged as ``monai.bundle`` merges a second config file: keys may be
    ``#``-separated paths into nested items (``"network_def#features"``), ``+key`` appends to a list or dict."""
    from monai.bundle import ConfigParser
    from monai.bundle.utils import merge_kv

    parser = ConfigParser(copy.deepcopy(dict(cfg)))
    for key, value in overrides.items():
        try:
            merge_kv(parser, key, value)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise DataError(f"override {key!r} does not apply to the inference config ({exc})") from exc
    return parser.get()  # type: ignore[no-any-return]


def inspect_bundle(bundle_dir: str | os.PathLike, name: str | None = None) -> BundleSpec:
    """Check that a bundle holds what MONAI Label's ``monaibundle`` app reads, and return it.

    Checks ``configs/inference.json`` (``network_def``, ``preprocessing``, ``postprocessing``),
    ``models/model.pt``, and ``configs/metadata.json``: ``network_data_format`` with first input
    ``image`` (``num_channels``, ``spatial_shape`` of length 2 or 3) and first output ``pred`` whose
    ``channel_def`` names at least one label besides ``background`` (MONAI Label lists those as the
    model's labels, ``{name.lower(): int(index)}``). The served name must not contain deepedit /
    deepgrow / detection / classification: MONAI Label derives the task type from it.

    Args:
        bundle_dir: the bundle folder.
        name: model name to serve it under (default: the folder name).

    Raises:
        DataError: naming the file and what is wrong or missing.
    """
    root = Path(bundle_dir).resolve()
    if not root.is_dir():
        raise DataError("bundle folder not found", root)
    name = name or root.name
    if not name or "/" in name or "," in name or name.startswith("."):
        raise DataError(f"invalid model name {name!r} (a folder name, no '/' or ',')", root)
    if any(t in name.lower() for t in _OTHER_TYPES):
        raise DataError(
            f"model name {name!r} contains one of {list(_OTHER_TYPES)}: MONAI Label would not serve it as "
            "segmentation; deploy it under another name (--name)", root)
    configs = [root / "configs" / c for c in _CONFIG_FILES if (root / "configs" / c).is_file()]
    if not configs:
        raise DataError("no configs/inference.json (or .yaml): MONAI Label ignores such a bundle", root / "configs")
    cfg = _load_config(configs[0])
    overrides_file = root / "configs" / "monailabel.json"
    overrides = _load_config(overrides_file) if overrides_file.is_file() else {}
    cfg = apply_overrides(cfg, overrides)
    missing = [k for k in ("network_def",) if k not in cfg]
    if not any(k in cfg for k in _PRE_KEYS):
        missing.append("preprocessing")
    if not any(k in cfg for k in _POST_KEYS):
        missing.append("postprocessing")
    if missing:
        raise DataError(f"keys MONAI Label needs are missing: {missing}", configs[0])
    model = root / "models" / "model.pt"
    if not model.is_file():
        raise DataError(
            "no trained weights (models/model.pt): train the bundle first, e.g. "
            "`python -m monai.bundle run --config_file configs/train.json`", model)
    meta_file = root / "configs" / "metadata.json"
    if not meta_file.is_file():
        raise DataError("missing configs/metadata.json", meta_file)
    meta = _load_config(meta_file)
    problems: list[str] = []
    fmt = meta.get("network_data_format")
    if not isinstance(fmt, dict) or not fmt.get("inputs") or not fmt.get("outputs"):
        raise DataError("network_data_format needs 'inputs' and 'outputs'", meta_file)
    image_key, image = next(iter(fmt["inputs"].items()))
    pred_key, pred = next(iter(fmt["outputs"].items()))
    if image_key != "image":
        problems.append(f"first input is {image_key!r}, must be 'image'")
    if pred_key != "pred":
        problems.append(f"first output is {pred_key!r}, must be 'pred'")
    shape = image.get("spatial_shape") if isinstance(image, dict) else None
    if not isinstance(shape, list) or len(shape) not in (2, 3):
        problems.append(f"inputs.{image_key}.spatial_shape must list 2 (2D) or 3 (3D) sizes, got {shape!r}"
                        " (MONAI Label reads the dimension from its length; it assumes 3D when absent)")
    channel_def = pred.get("channel_def") if isinstance(pred, dict) else None
    labels = {}
    if isinstance(channel_def, dict):
        try:
            labels = {str(v).lower(): int(k) for k, v in channel_def.items() if str(v).lower() != "background"}
        except (TypeError, ValueError):
            problems.append(f"outputs.{pred_key}.channel_def keys must be integers, got {list(channel_def)}")
    if not labels and not any("channel_def" in p for p in problems):
        problems.append(f"outputs.{pred_key}.channel_def must name the object class besides background, "
                        'e.g. {"0": "background", "1": "nucleus"} (MONAI Label lists it as the model\'s label)')
    try:
        num_channels = int(image.get("num_channels", 1))
    except (TypeError, ValueError, AttributeError):
        num_channels = 1
        problems.append(f"inputs.{image_key}.num_channels must be an integer")
    if problems:
        raise DataError("metadata MONAI Label cannot use:\n  " + "\n  ".join(problems), meta_file)
    return BundleSpec(
        path=root, name=name, config_file=configs[0], image_key=image_key, pred_key=pred_key,
        dimension=len(shape), num_channels=num_channels, labels=labels,
        version=meta.get("version"), description=meta.get("description"), overrides=overrides,
    )


def _parser(spec: BundleSpec):
    """A ConfigParser of the bundle's inference config (+ overrides) with ``bundle_root`` set, as MONAI Label builds it."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(spec.config_file))
    parser.config = apply_overrides(parser.config, {**spec.overrides, "bundle_root": str(spec.path)})  # type: ignore[arg-type]
    return parser


@contextlib.contextmanager
def _with_bundle_path(spec: BundleSpec) -> Iterator[None]:
    """The bundle folder on ``sys.path`` (its own ``scripts``), as MONAI Label does."""
    sys.path.insert(0, str(spec.path))
    try:
        yield
    finally:
        if str(spec.path) in sys.path:
            sys.path.remove(str(spec.path))


def check_weights(spec: BundleSpec) -> None:
    """Load ``models/model.pt`` into ``network_def`` strictly (MONAI Label loads with ``strict=False``
    and only warns, serving random weights when the keys do not match).

    Raises:
        DataError: when the checkpoint cannot be read or does not match ``network_def``.
    """
    model = spec.path / "models" / "model.pt"
    with _with_bundle_path(spec):
        network = _parser(spec).get_parsed_content("network_def", instantiate=True)
    try:
        state = torch.load(model, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad file
        raise DataError(f"cannot load the checkpoint as a plain state_dict ({exc})", model) from exc
    state = state.get("model", state) if isinstance(state, dict) else state
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DataError(f"weights do not match network_def: {str(exc).splitlines()[0]}", model) from exc


def _probe_image(path: Path, num_channels: int, height: int, width: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    shape = (height, width) if num_channels == 1 else (height, width, 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def probe_layout(spec: BundleSpec, height: int = 48, width: int = 80) -> str:
    """Run the bundle's preprocessing on a non-square PNG and tell its array layout.

    Returns ``"xy"`` when the image comes out ``(C, W, H)`` (MONAI's readers), ``"yx"`` when ``(C, H, W)``.
    3D bundles are not probed (``"xy"``).

    Raises:
        DataError: when the preprocessing cannot load ``{"image": <png path>}``, which is what MONAI Label gives it.
    """
    if spec.dimension != 2:
        return "xy"
    with tempfile.TemporaryDirectory() as tmp, _with_bundle_path(spec):
        png = _probe_image(Path(tmp) / "probe.png", spec.num_channels, height, width)
        parser = _parser(spec)
        key = [k for k in _PRE_KEYS if parser.get(k)][-1]
        try:
            pre = parser.get_parsed_content(key, instantiate=True)
            out = pre({spec.image_key: str(png)})
        except Exception as exc:  # noqa: BLE001 - report any failure with the reason
            raise DataError(
                f"'{key}' cannot load a plain image path ({type(exc).__name__}: {exc}); MONAI Label calls it with "
                f"{{'{spec.image_key}': <file>}}: start it with LoadImaged, or override it in configs/monailabel.json",
                spec.config_file) from exc
    shape = tuple(np.asarray(out[spec.image_key].shape)[-2:])
    if shape == (width, height):
        return "xy"
    if shape == (height, width):
        return "yx"
    logger.warning("preprocessing of %s changes the image size (%s from %dx%d); assuming MONAI's (W, H) layout",
                   spec.name, shape, height, width)
    return "xy"


# ------------------------------------------------------------------------------------------------
# deployment
# ------------------------------------------------------------------------------------------------
def server_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for the server: MONAI Label's own MLflow tracking off (its file:// default fails
    with monai 1.6.1), no proxies for loopback, unbuffered logs."""
    env = dict(os.environ if base is None else base)
    env.setdefault("MONAI_LABEL_TRACKING_ENABLED", "false")
    env["PYTHONUNBUFFERED"] = "1"
    for k in ("NO_PROXY", "no_proxy"):
        env[k] = ",".join(x for x in (env.get(k, ""), "127.0.0.1,localhost") if x)
    return env


def download_app(app_dir: str | os.PathLike, python: str | None = None, timeout: float = 300) -> Path:
    """Copy the ``monaibundle`` sample app out of the installed monailabel wheel (no network):
    ``monailabel apps --download --name monaibundle --output <parent>``, renamed to ``app_dir``."""
    app_dir = Path(app_dir).resolve()
    if (app_dir / "main.py").is_file():
        return app_dir
    python = python or sys.executable
    with tempfile.TemporaryDirectory(dir=app_dir.parent if app_dir.parent.exists() else None) as tmp:
        cmd = [python, "-m", "monailabel.main", "apps", "--download", "--name", APP_NAME, "--output", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=server_env())
        src = Path(tmp) / APP_NAME
        if proc.returncode != 0 or not (src / "main.py").is_file():
            hint = ("install it with `make install` or see docs/monailabel.md"
                    if "No module named" in proc.stderr else "")
            raise RuntimeError(f"`{shlex.join(cmd)}` failed ({proc.returncode}) {hint}\n{proc.stdout[-2000:]}"
                               f"\n{proc.stderr[-4000:]}")
        app_dir.parent.mkdir(parents=True, exist_ok=True)
        if app_dir.exists():
            for item in src.iterdir():
                dst = app_dir / item.name
                if not dst.exists():
                    shutil.move(str(item), dst)
        else:
            shutil.move(str(src), app_dir)
    return app_dir


@dataclass
class Deployment:
    """A bundle served from ``app_dir/model/<name>`` (what :func:`deploy_bundle` returns)."""

    app_dir: Path
    name: str
    spec: BundleSpec
    layout: str
    conf: dict[str, str] = field(default_factory=dict)

    @property
    def model_dir(self) -> Path:
        return self.app_dir / "model" / self.name

    def command(
        self, studies: str | os.PathLike, port: int = 8000, host: str = "127.0.0.1", python: str | None = None,
        models: Sequence[str] | None = None,
    ) -> list[str]:
        """``python -m monailabel.main start_server`` for this app (serving ``models``, default this one)."""
        conf = {"models": ",".join(models or [self.name]), **SERVER_CONF, **self.conf}
        cmd = [python or sys.executable, "-m", "monailabel.main", "start_server", "--app", str(self.app_dir),
               "--studies", str(Path(studies).resolve()), "--host", host, "--port", str(port)]
        for k, v in conf.items():
            cmd += ["--conf", k, v]
        return cmd


def _adapted_config(spec: BundleSpec, layout: str) -> dict[str, Any]:
    cfg = apply_overrides(_load_config(spec.config_file), spec.overrides)
    imports = cfg.get("imports", [])
    cfg["imports"] = (list(imports) if isinstance(imports, list) else [imports]) + ["$import monai_ext", "$import monai_ext.label"]
    post_keys = [k for k in _POST_KEYS if cfg.get(k)]
    for key in post_keys or ["postprocessing"]:
        cfg[f"monailabel_bundle_{key}"] = cfg.get(key)
        cfg[key] = (f"$monai_ext.label.label_postprocessing(@monailabel_bundle_{key}, keys={spec.pred_key!r}, "
                    f"spatial_dims={spec.dimension}, layout={layout!r})")
    return cfg


def deploy_bundle(
    bundle_dir: str | os.PathLike,
    app_dir: str | os.PathLike,
    name: str | None = None,
    copy: bool = False,
    verify: bool = True,
    python: str | None = None,
    conf: Mapping[str, str] | None = None,
) -> Deployment:
    """Put a trained bundle into MONAI Label's ``monaibundle`` app, offline, and write a start script.

    Steps: :func:`inspect_bundle`; with ``verify``, :func:`check_weights`; :func:`probe_layout`;
    :func:`download_app` when ``app_dir`` has no app yet; then ``app_dir/model/<name>`` gets an adapted
    ``configs/`` (``postprocessing`` through :func:`label_postprocessing`; keys of an optional
    ``configs/monailabel.json`` in the bundle override the inference config) and symlinks to (or,
    with ``copy``, copies of) every other entry of the bundle (of ``models/``: ``model.pt`` and ``model.ts`` only,
    since MONAI Label would serve a training checkpoint such as ``last.pt``). ``app_dir/start_<name>.sh`` starts the
    server on 127.0.0.1.

    Args:
        bundle_dir: trained bundle (with ``models/model.pt``).
        app_dir: the app folder (created; an existing app is reused, the model replaced).
        name: model name (default: bundle folder name).
        copy: copy files instead of linking them (a self-contained app).
        verify: check the weights strictly against ``network_def``.
        python: interpreter with monailabel installed (default: this one).
        conf: extra ``--conf`` pairs for the server.

    Raises:
        DataError: the bundle cannot be served (message names the file and the problem).
    """
    spec = inspect_bundle(bundle_dir, name)
    if verify:
        check_weights(spec)
    layout = probe_layout(spec)
    app = download_app(app_dir, python=python)
    dst = app / "model" / spec.name
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    elif dst.exists():
        shutil.rmtree(dst)
    (dst / "configs").mkdir(parents=True)
    (dst / "models").mkdir()

    def put(item: Path, target: Path) -> None:
        if copy:
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, target)
        else:
            target.symlink_to(item.resolve(), target_is_directory=item.is_dir())

    for item in sorted(spec.path.iterdir()):
        if item.name in _SKIP_ON_DEPLOY or item.name.startswith("mlruns") or item.name == "models":
            continue
        put(item, dst / item.name)
    # only the served weights: MONAI Label offers every models/*.pt and, by default, loads the one with the
    # shortest name, i.e. a training checkpoint ``last.pt`` (optimizer, RNG, ...) before ``model.pt``
    for weights in ("model.pt", "model.ts"):
        if (spec.path / "models" / weights).is_file():
            put(spec.path / "models" / weights, dst / "models" / weights)
    for item in sorted((spec.path / "configs").iterdir()):
        if item.is_file() and item.name not in _CONFIG_FILES:
            shutil.copy2(item, dst / "configs" / item.name)
    adapted = _adapted_config(spec, layout)
    (dst / "configs" / "inference.json").write_text(json.dumps(adapted, indent=4))
    dep = Deployment(app_dir=app, name=spec.name, spec=spec, layout=layout, conf=dict(conf or {}))
    _write_start_script(dep, python)
    logger.info("deployed %s to %s (layout %s, labels %s)", spec.name, dst, layout, spec.labels)
    return dep


def _write_start_script(dep: Deployment, python: str | None) -> Path:
    cmd = dep.command(".", port=8000, python=python or sys.executable)
    args = [shlex.quote(a) for a in cmd]
    # The studies folder and the port are the script's arguments.
    args[cmd.index("--studies") + 1] = '"$STUDIES"'
    args[cmd.index("--port") + 1] = '"$PORT"'
    script = dep.app_dir / f"start_{dep.name}.sh"
    script.write_text(
        "#!/usr/bin/env bash\n"
        f"# Serve the bundle '{dep.name}' with MONAI Label {MONAILABEL_VERSION}, on this machine only (127.0.0.1).\n"
        "# Usage: start_<name>.sh <studies folder> [port]   (the folder holds the images: .png, .tif, .nii.gz ...)\n"
        "set -euo pipefail\n"
        'STUDIES="${1:?usage: $0 <studies folder> [port]}"\n'
        'PORT="${2:-8000}"\n'
        "export MONAI_LABEL_TRACKING_ENABLED=false\n"
        "exec " + " ".join(args) + "\n"
    )
    script.chmod(0o755)
    return script


# ------------------------------------------------------------------------------------------------
# server and client
# ------------------------------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _session():
    import requests

    s = requests.Session()
    s.trust_env = False  # never route loopback traffic through a proxy from the environment
    return s


class MonaiLabelServer:
    """``with MonaiLabelServer(deployment, studies) as srv:`` runs the server on loopback until the block ends.

    The server is a subprocess; :meth:`start` polls ``GET /info/`` until it answers (at most
    ``timeout`` seconds) and raises with the server log if it exits or never answers. :meth:`stop`
    always terminates it (then kills it).

    Args:
        deployment: from :func:`deploy_bundle`.
        studies: folder of images (MONAI Label's local datastore).
        port: TCP port (default: a free one).
        host: loopback only by default.
        timeout: seconds to wait for the server to answer.
        log_file: where the server's output goes (default: ``app_dir/logs/server_<port>.log``).
        python: interpreter with monailabel installed.
        models: names to serve (default: the deployment's).
    """

    def __init__(
        self,
        deployment: Deployment,
        studies: str | os.PathLike,
        port: int | None = None,
        host: str = "127.0.0.1",
        timeout: float = 180.0,
        log_file: str | os.PathLike | None = None,
        python: str | None = None,
        models: Sequence[str] | None = None,
    ) -> None:
        self.deployment = deployment
        self.studies = Path(studies)
        self.host = host
        self.port = port or free_port(host)
        self.timeout = timeout
        self.log_file = Path(log_file) if log_file else deployment.app_dir / "logs" / f"server_{self.port}.log"
        self.python = python
        self.models = list(models or [deployment.name])
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self, tail: int = 8000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def start(self) -> MonaiLabelServer:
        for m in self.models:
            if not (self.deployment.app_dir / "model" / m / "configs").is_dir():
                # MONAI Label would try to download a missing bundle from the model zoo.
                raise DataError("model not deployed (run deploy_bundle first)", self.deployment.app_dir / "model" / m)
        self.studies.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.deployment.command(self.studies, port=self.port, host=self.host, python=self.python,
                                      models=self.models)
        with open(self.log_file, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=server_env(),
                                         cwd=self.deployment.app_dir, start_new_session=True)
        deadline = time.monotonic() + self.timeout
        session = _session()
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"MONAI Label server exited ({self.proc.returncode}):\n{self.log()}")
                try:
                    if session.get(f"{self.url}/info/", timeout=2).status_code == 200:
                        return self
                except OSError:
                    pass
                time.sleep(0.5)
        except BaseException:
            self.stop()
            raise
        finally:
            session.close()
        self.stop()
        raise TimeoutError(f"MONAI Label server did not answer on {self.url} within {self.timeout:.0f} s:\n{self.log()}")

    def stop(self, grace: float = 10.0) -> None:
        """Terminate the server (its process group), then kill it if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        import signal

        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait(timeout=grace)

    def info(self) -> dict[str, Any]:
        with _session() as s:
            r = s.get(f"{self.url}/info/", timeout=30)
            r.raise_for_status()
            return r.json()

    def infer(self, model: str | None = None, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """:func:`infer` against this server (``model`` defaults to the deployment's)."""
        return infer(self.url, model or self.deployment.name, **kwargs)

    def __enter__(self) -> MonaiLabelServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def read_label_bytes(data: bytes, filename: str) -> np.ndarray:
    """Decode a label image returned by MONAI Label (``.tif``/``.tiff``, ``.png``, ``.nii``/``.nii.gz``)."""
    import io

    name = filename.lower()
    if name.endswith((".tif", ".tiff")):
        import tifffile

        return tifffile.imread(io.BytesIO(data))
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        with tempfile.NamedTemporaryFile(suffix=".nii.gz" if name.endswith(".gz") else ".nii") as f:
            f.write(data)
            f.flush()
            img = nib.load(f.name)
            return np.asarray(img.dataobj).T  # back to (rows, columns[, ...]) numpy order
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


def infer(
    url: str,
    model: str,
    image: str | None = None,
    file: str | os.PathLike | None = None,
    params: Mapping[str, Any] | None = None,
    timeout: float = 300.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``POST /infer/<model>?output=all`` and decode the answer.

    Args:
        url: server root, e.g. ``http://127.0.0.1:8000``.
        model: model name.
        image: id of an image in the server's datastore (file name without extension).
        file: or an image file to upload.
        params: request params (e.g. ``{"result_extension": ".png"}``).
        timeout: seconds.

    Returns:
        (label array in the image's (rows, columns) order, result JSON).
    """
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    if (image is None) == (file is None):
        raise ValueError("give exactly one of image (datastore id) or file")
    query = {"output": "all"}
    if image is not None:
        query["image"] = image
    endpoint = f"{url.rstrip('/')}/infer/{urllib.parse.quote(model)}?{urllib.parse.urlencode(query)}"
    data = {"params": json.dumps(dict(params or {}))}
    with _session() as s:
        if file is not None:
            with open(file, "rb") as fh:
                r = s.post(endpoint, data=data, files={"file": (Path(file).name, fh)}, timeout=timeout)
        else:
            r = s.post(endpoint, data=data, timeout=timeout)
    if r.status_code != 200:
        raise RuntimeError(f"POST {endpoint} -> {r.status_code}: {r.text[:2000]}")
    ctype = r.headers.get("content-type", "")
    if not ctype.startswith("multipart/"):
        raise RuntimeError(f"POST {endpoint} returned no label image ({ctype}): {r.text[:2000]}")
    result: dict[str, Any] = {}
    label = None
    for part in MultipartDecoder(r.content, ctype).parts:
        disposition = part.headers.get(b"Content-Disposition", b"").decode()
        fields = dict(
            (k.strip(), v.strip().strip('"')) for k, _, v in
            (p.partition("=") for p in disposition.split(";")[1:])
        )
        if fields.get("name") == "params":
            result = json.loads(part.content or b"{}")
        elif "filename" in fields:
            label = read_label_bytes(part.content, fields["filename"])
            result.setdefault("_file_name", fields["filename"])
    if label is None:
        raise RuntimeError(f"POST {endpoint}: no image part in the answer")
    return label, result


# ------------------------------------------------------------------------------------------------
# reference prediction
# ------------------------------------------------------------------------------------------------
def predict_local(deployment: Deployment, image_path: str | os.PathLike, device: str = "cpu") -> np.ndarray:
    """The label the bundle itself gives ``image_path``, in the file's (rows, columns) order, in process.

    Runs the original bundle's ``preprocessing``, ``network_def`` with ``models/model.pt`` (strict),
    ``inferer`` and ``postprocessing`` without file writers: the reference a served answer must equal.
    """
    spec = deployment.spec
    with _with_bundle_path(spec):
        parser = _parser(spec)
        parser.config.update({"device": device})  # type: ignore[union-attr]
        pre = parser.get_parsed_content([k for k in _PRE_KEYS if parser.get(k)][-1], instantiate=True)
        network = parser.get_parsed_content("network_def", instantiate=True)
        state = torch.load(spec.path / "models" / "model.pt", map_location=device, weights_only=True)
        network.load_state_dict(state.get("model", state), strict=True)
        network.to(device).eval()
        inferer = parser.get_parsed_content("inferer", instantiate=True) if parser.get("inferer") else None
        post_key = [k for k in _POST_KEYS if parser.get(k)][-1]
        post = label_postprocessing(parser.get_parsed_content(post_key, instantiate=True), keys=spec.pred_key,
                                    spatial_dims=spec.dimension, layout=deployment.layout)
        d = pre({spec.image_key: str(image_path)})
        x = d[spec.image_key]
        x = (x if isinstance(x, torch.Tensor) else torch.as_tensor(x))[None].to(device)
        with torch.no_grad():
            out = inferer(x, network) if inferer is not None else network(x)
        d[spec.pred_key] = out[spec.pred_key][0] if isinstance(out, dict) else out[0]
        d = post(d)
    pred = np.asarray(d[spec.pred_key])
    return pred.T  # MONAI Label's writer transposes; the file is in (rows, columns) order
