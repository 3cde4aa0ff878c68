"""MONAI Label 0.8.5 deployment of a bundle (monai_ext.label, scripts/deploy_monailabel.py).

The server test starts a real MONAI Label server on 127.0.0.1 with a throwaway bundle; its core,
:func:`check_bundle_served`, takes any trained bundle folder, so it can be parametrized over the real
bundles (``bundles/<name>`` once ``models/model.pt`` exists).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers_toy_bundle import make_toy_bundle, write_dot_image
from monai_ext.errors import DataError
from monai_ext.label import (
    MonaiLabelInstanced,
    MonaiLabelServer,
    check_weights,
    deploy_bundle,
    inspect_bundle,
    label_postprocessing,
    predict_local,
    probe_layout,
)

REPO = Path(__file__).resolve().parents[1]
HAVE_MONAILABEL = importlib.util.find_spec("monailabel") is not None
needs_monailabel = pytest.mark.skipif(
    not HAVE_MONAILABEL and os.environ.get("CI") != "true",
    reason="monailabel not installed (make install, or see docs/monailabel.md)",
)


def check_bundle_served(
    bundle_dir: Path, image: Path, work: Path, name: str | None = None, more: Callable | None = None,
    also_serve: Sequence[str] = (),
) -> tuple[np.ndarray, dict]:
    """Deploy ``bundle_dir`` into a fresh monaibundle app, serve it on loopback, infer ``image``.

    Asserts: ``GET /info/`` lists the model as a segmentation model with the metadata's labels and
    dimension, and ``POST /infer/<model>`` on the image (in the datastore) returns exactly the
    instance label the bundle computes in process (same ids, same orientation, int32).
    ``more(server, served_image)`` runs further checks while the server is up, with the models
    ``also_serve`` (already deployed into ``work / "app"``) served too.
    Returns (the served label, the /info/ entry of the model).
    """
    studies = work / "studies"
    studies.mkdir(parents=True, exist_ok=True)
    served_image = studies / image.name
    if served_image != image:
        served_image.write_bytes(image.read_bytes())
    dep = deploy_bundle(bundle_dir, work / "app", name=name)
    expected = predict_local(dep, served_image)
    with MonaiLabelServer(dep, studies, timeout=240, models=[dep.name, *also_serve]) as server:
        info = server.info()
        assert dep.name in info["models"], info
        model = info["models"][dep.name]
        assert model["type"] == "segmentation"
        assert model["labels"] == dep.spec.labels
        assert model["dimension"] == dep.spec.dimension
        label, result = server.infer(image=served_image.name.split(".")[0])
        if more is not None:
            more(server, served_image)
    assert result["_file_name"].endswith(".tif")
    assert label.dtype == np.int32
    assert label.shape == expected.shape
    np.testing.assert_array_equal(label, expected)
    return label, model


def _edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _load_yx(cfg: dict) -> None:
    cfg["preprocessing"]["transforms"][0].update(reader="PILReader", reverse_indexing=False)


# ------------------------------------------------------------------------------------------------
# the real server
# ------------------------------------------------------------------------------------------------
@pytest.mark.label
@needs_monailabel
def test_toy_bundle_served_by_monailabel(tmp_path: Path) -> None:
    bundle = make_toy_bundle(tmp_path / "bundles", "toy_cells", network="threshold")
    image, mask = write_dot_image(tmp_path / "dots.png")
    # The same model with (H, W) arrays instead of MONAI's (W, H), served next to it.
    yx_bundle = make_toy_bundle(tmp_path / "bundles", "toy_cells_yx", network="threshold")
    _edit_json(yx_bundle / "configs" / "inference.json", _load_yx)
    assert deploy_bundle(yx_bundle, tmp_path / "work" / "app").layout == "yx"

    def other_formats(server: MonaiLabelServer, served_image: Path) -> None:
        """A client may ask for a 16-bit PNG or NIfTI, and may upload the image instead of naming it."""
        png, res = server.infer(image="dots", params={"result_extension": ".png"})
        assert res["_file_name"].endswith(".png") and png.dtype == np.uint16
        nii, _ = server.infer(file=served_image, params={"result_extension": ".nii.gz"})
        yx, _ = server.infer("toy_cells_yx", image="dots")
        for lab in (png, nii, yx):
            np.testing.assert_array_equal(lab > 0, mask)
            assert int(lab.max()) == 474

    label, model = check_bundle_served(bundle, image, tmp_path / "work", more=other_formats, also_serve=["toy_cells_yx"])

    # The label is the image's (rows, columns), and every dot is one instance with its own id > 0.
    assert label.shape == mask.shape
    np.testing.assert_array_equal(label > 0, mask)
    ids = np.unique(label[label > 0])
    assert ids.size == 474 and ids.max() == 474  # ids above 255 survive
    assert model["labels"] == {"cell": 1}

    # start script: loopback only, offline conf.
    script = tmp_path / "work" / "app" / "start_toy_cells.sh"
    for token in ("--host 127.0.0.1", "--conf zoo_source github", "--conf sam2 false", "MONAI_LABEL_TRACKING_ENABLED=false"):
        assert token in script.read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


# ------------------------------------------------------------------------------------------------
# deploy-time checks (no server)
# ------------------------------------------------------------------------------------------------
def test_inspect_reads_what_monailabel_reads(tmp_path: Path) -> None:
    spec = inspect_bundle(make_toy_bundle(tmp_path, "toy_cells"))
    assert (spec.name, spec.image_key, spec.pred_key, spec.dimension, spec.labels) == ("toy_cells", "image", "pred", 2, {"cell": 1})


def test_missing_weights_is_a_clear_error(tmp_path: Path) -> None:
    bundle = make_toy_bundle(tmp_path, "toy_cells", with_model=False)
    with pytest.raises(DataError, match=r"models/model.pt.*train the bundle first"):
        inspect_bundle(bundle)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["network_data_format"]["outputs"]["pred"].update(channel_def={"0": "background"}), "channel_def"),
        (lambda m: m["network_data_format"]["inputs"]["image"].pop("spatial_shape"), "spatial_shape"),
        (lambda m: m["network_data_format"].update(outputs={"mask": m["network_data_format"]["outputs"]["pred"]}), "'pred'"),
    ],
)
def test_invalid_metadata_is_a_clear_error(tmp_path: Path, edit, message: str) -> None:
    bundle = make_toy_bundle(tmp_path, "toy_cells")
    _edit_json(bundle / "configs" / "metadata.json", edit)
    with pytest.raises(DataError, match=message) as err:
        inspect_bundle(bundle)
    assert "metadata.json" in str(err.value)


def test_task_type_from_name_and_weight_mismatch(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="detection"):
        inspect_bundle(make_toy_bundle(tmp_path, "cell_detection"))
    bundle = make_toy_bundle(tmp_path, "toy_cells")
    torch.save({"module.weight": torch.zeros(2, 1, 1, 1)}, bundle / "models" / "model.pt")
    with pytest.raises(DataError, match="do not match network_def"):
        check_weights(inspect_bundle(bundle))


def test_preprocessing_must_load_a_plain_path_and_can_be_overridden(tmp_path: Path) -> None:
    bundle = make_toy_bundle(tmp_path, "toy_cells")
    good = json.loads((bundle / "configs" / "inference.json").read_text())["preprocessing"]
    _edit_json(bundle / "configs" / "inference.json",
               lambda c: c["preprocessing"]["transforms"][0].update(keys="record"))
    with pytest.raises(DataError, match="cannot load a plain image path"):
        probe_layout(inspect_bundle(bundle))
    (bundle / "configs" / "monailabel.json").write_text(json.dumps({"preprocessing": good}))
    assert probe_layout(inspect_bundle(bundle)) == "xy"


def test_cli_reports_missing_model(tmp_path: Path) -> None:
    bundle = make_toy_bundle(tmp_path, "toy_cells", with_model=False)
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "deploy_monailabel.py"), str(bundle), "--app",
                           str(tmp_path / "app")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "models/model.pt" in proc.stderr
    assert not (tmp_path / "app").exists()


# ------------------------------------------------------------------------------------------------
# the post-processing adapter
# ------------------------------------------------------------------------------------------------
def test_adapter_squeezes_casts_and_orients() -> None:
    pred = torch.zeros(1, 5, 3)  # MONAI layout (W, H) with a channel
    pred[0, 4, 2] = 300.0
    out = MonaiLabelInstanced(keys="pred")({"pred": pred})
    assert out["pred"].shape == (5, 3) and out["pred"].dtype == np.int32 and out["pred"][4, 2] == 300
    assert (out["result_extension"], out["result_dtype"]) == (".tif", "int32")
    yx = MonaiLabelInstanced(keys="pred", layout="yx")({"pred": pred})
    assert yx["pred"].shape == (3, 5)
    png = MonaiLabelInstanced(keys="pred")({"pred": pred, "result_extension": ".png"})
    assert png["result_dtype"] == "uint16"
    pred[0, 0, 0] = 70000
    with pytest.raises(ValueError, match="16-bit"):
        MonaiLabelInstanced(keys="pred")({"pred": pred, "result_extension": ".png"})


def test_label_postprocessing_drops_writers(tmp_path: Path) -> None:
    from monai.transforms import Compose, SaveImaged

    from monai_ext.transforms import SaveInstancesd

    post = Compose([SaveImaged(keys="pred", output_dir=str(tmp_path)), SaveInstancesd(keys="pred", output_dir=tmp_path)])
    names = [type(t).__name__ for t in label_postprocessing(post).transforms]
    assert names == ["MonaiLabelInstanced"]


def test_overrides_merge_like_a_second_bundle_config() -> None:
    """configs/monailabel.json keys merge as ``monai.bundle`` merges configs: ``#`` paths and ``+`` appends."""
    from monai_ext.errors import DataError
    from monai_ext.label import apply_overrides

    cfg = {"network_def": {"_target_": "Net", "features": [16, 32]}, "imports": ["$import a"], "x": 1}
    out = apply_overrides(cfg, {"network_def#features": [8, 16], "+imports": ["$import b"], "y": 2})
    assert out == {"network_def": {"_target_": "Net", "features": [8, 16]}, "imports": ["$import a", "$import b"],
                   "x": 1, "y": 2}
    assert cfg["network_def"]["features"] == [16, 32]  # the input is not modified
    with pytest.raises(DataError, match="no_such#key"):
        apply_overrides(cfg, {"no_such#key": 1})


def test_deploy_serves_model_pt_not_training_checkpoints(tmp_path: Path) -> None:
    """MONAI Label loads the shortest-named models/*.pt: a training checkpoint last.pt must not be served."""
    bundle = make_toy_bundle(tmp_path / "bundles", "toy_ckpt", network="threshold")
    torch.save({"network": {}, "optimizer": {}, "epoch": 3}, bundle / "models" / "last.pt")
    dep = deploy_bundle(bundle, tmp_path / "app")
    served = dep.app_dir / "model" / dep.name / "models"
    assert sorted(p.name for p in served.iterdir()) == ["model.pt"]
    assert (served / "model.pt").resolve() == (bundle / "models" / "model.pt").resolve()
