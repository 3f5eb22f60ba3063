"""SMPL / SMPL-X through smplx with small synthetic model files: SynBody bounds, TightCap box and warp."""

import pickle

import numpy as np
import pytest
import torch

from humanliff.data.smpl import (
    BIG_POSE,
    CanonicalWarp,
    load_model,
    smplx_bounds,
    tightcap_bounds,
    tightcap_warp,
)
from humanliff.errors import InputFileError

V = 40


def fake_model(joints, pose_basis, shape_dims, rng):
    parents = np.array([0] + [(j - 1) // 2 for j in range(1, joints)])
    template = rng.normal(scale=0.3, size=(V, 3))
    regressor = np.zeros((joints, V))
    for j in range(joints):
        regressor[j, rng.choice(V, 3, replace=False)] = 1 / 3
    weights = rng.dirichlet(np.full(joints, 0.3), size=V)
    return dict(
        v_template=template,
        shapedirs=rng.normal(scale=0.01, size=(V, 3, shape_dims)),
        posedirs=rng.normal(scale=0.01, size=(V, 3, pose_basis)),
        J_regressor=regressor,
        weights=weights,
        kintree_table=np.stack([parents, np.arange(joints)]),
        f=np.array([[0, 1, 2], [1, 2, 3]]),
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    (root / "smpl").mkdir()
    with open(root / "smpl" / "SMPL_NEUTRAL.pkl", "wb") as f:
        pickle.dump(fake_model(24, 207, 10, rng), f)
    smplx = fake_model(55, 486, 20, rng)
    smplx.update(
        hands_componentsl=np.eye(45),
        hands_componentsr=np.eye(45),
        hands_meanl=np.ones(45),
        hands_meanr=np.ones(45),
        lmk_faces_idx=np.zeros(5, np.int64),
        lmk_bary_coords=np.full((5, 3), 1 / 3),
        dynamic_lmk_faces_idx=np.zeros((79, 17), np.int64),
        dynamic_lmk_bary_coords=np.full((79, 17, 3), 1 / 3),
    )
    for gender in ("NEUTRAL", "FEMALE"):
        np.savez(root / f"SMPLX_{gender}.npz", **smplx)
    return root


def test_smplx_bounds_pad_the_posed_vertices(models, tmp_path):
    rng = np.random.default_rng(1)
    params = {
        "betas": np.zeros((1, 10)),
        "transl": np.array([[0.5, 1.0, -2.0], [9, 9, 9]]),
        **{
            k: np.zeros((2, n))
            for k, n in [
                ("global_orient", 3),
                ("body_pose", 63),
                ("jaw_pose", 3),
                ("leye_pose", 3),
                ("reye_pose", 3),
                ("left_hand_pose", 45),
                ("right_hand_pose", 45),
                ("expression", 10),
            ]
        },
    }
    np.savez(tmp_path / "smplx.npz", smplx=params, meta={"gender": "female"})
    template = load_model(str(models), "smplx", "female").v_template.numpy() + [0.5, 1.0, -2.0]
    bounds = smplx_bounds(tmp_path / "smplx.npz", models)
    np.testing.assert_allclose(bounds[0], template.min(0) - [0.05, 0.10, 0.05], atol=1e-5)
    np.testing.assert_allclose(bounds[1], template.max(0) + [0.05, 0.10, 0.05], atol=1e-5)
    params["global_orient"] = rng.normal(size=(2, 3))
    np.savez(tmp_path / "smplx.npz", smplx=params, meta={"gender": "female"})
    assert not np.allclose(smplx_bounds(tmp_path / "smplx.npz", models), bounds)
    np.savez(tmp_path / "smplx.npz", smplx=params, meta={"gender": "male"})
    with pytest.raises(InputFileError, match="SMPLX_MALE.npz: missing SMPLX model file"):
        smplx_bounds(tmp_path / "smplx.npz", models)


def write_smpl_fit(path, poses, betas, transl):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        smpl={"global_orient": poses[:, :3], "body_pose": poses[:, 3:], "betas": betas, "transl": transl},
    )


def test_canonical_warp_maps_posed_vertices_to_the_big_pose(models, tmp_path):
    rng = np.random.default_rng(2)
    poses = rng.normal(scale=0.3, size=(1, 72))
    write_smpl_fit(tmp_path / "fit.npz", poses, rng.normal(size=(1, 10)), np.array([[0.1, 0.9, 0.2]]))
    warp = tightcap_warp(tmp_path / "fit.npz", models)
    model = load_model(str(models), "smpl", "neutral")
    big = torch.zeros(1, 72)
    for index, angle in BIG_POSE.items():
        big[0, index] = angle
    identity = CanonicalWarp(model, big, torch.zeros(1, 10), torch.zeros(1, 3))
    canonical = identity.vertices  # mean shape in the big pose
    # every posed vertex's nearest vertex is itself, so the warp is exact there
    torch.testing.assert_close(warp(warp.posed_vertices()), canonical, atol=1e-4, rtol=0)
    # a subject already in the big pose with the mean shape is left where it is (near the body)
    points = canonical + 0.01 * torch.randn_like(canonical)
    torch.testing.assert_close(identity(points), points, atol=1e-4, rtol=0)
    assert warp(points[None].expand(2, V, 3)).shape == (2, V, 3)
    np.testing.assert_allclose(
        warp.bounds[1] - warp.bounds[0], np.ptp(canonical.numpy(), axis=0) + [0.1, 0.3, 0.1], atol=1e-5
    )
    box = tightcap_bounds(warp)
    assert np.all(box[0] < warp.posed_vertices().numpy().min(0)) and box.shape == (2, 3)


def test_missing_and_bad_parameter_files(models, tmp_path):
    with pytest.raises(InputFileError, match="fit.npz: missing"):
        tightcap_warp(tmp_path / "fit.npz", models)
    np.savez(tmp_path / "fit.npz", other=np.zeros(3))
    with pytest.raises(InputFileError, match="expected an npz with a 'smpl' dict"):
        tightcap_warp(tmp_path / "fit.npz", models)
    with pytest.raises(InputFileError, match="SMPL_NEUTRAL.pkl: missing"):
        load_model(str(tmp_path), "smpl", "neutral")
