"""The colmap backend's window model in COLMAP's own structures, in memory: the anchors' cached features
as a ``pycolmap.Database`` (opened on ``":memory:"``) and the seed model that lets COLMAP's incremental
pipeline grow the previous window instead of starting again.

COLMAP 4 data model (pycolmap 4.2, ``src/colmap/scene/database.h``, ``reconstruction.h``): a camera is the
sensor of a rig, an image is the data of a frame of that rig; with one camera per window each image has a
trivial frame (frame id = image id) of rig 1 whose only sensor is camera 1.
"""
from __future__ import annotations

from typing import Sequence

from selfi_ros.backends.colmap_features import Features


def write_images(db, camera, names: Sequence[str], feats: Sequence[Features]) -> None:
    """Write ``camera`` (id 1, must have ``camera_id`` 1) with its rig (id 1) and, for each anchor k, an image
    ``names[k]`` (id k + 1) with its trivial frame, keypoints and descriptors into the open database ``db``."""
    import pycolmap as pc

    db.write_camera(camera, use_camera_id=True)
    rig = pc.Rig()
    rig.add_ref_sensor(camera.sensor_id)
    rig.rig_id = 1
    db.write_rig(rig, use_rig_id=True)
    for k, (name, ft) in enumerate(zip(names, feats)):
        im = pc.Image(name=name, camera_id=1, image_id=k + 1)
        db.write_image(im, use_image_id=True)
        fr = pc.Frame()
        fr.rig_id = 1
        fr.frame_id = k + 1
        fr.add_data_id(im.data_id)
        db.write_frame(fr, use_frame_id=True)
        db.write_keypoints(k + 1, ft.keypoints)
        db.write_descriptors(k + 1, pc.FeatureDescriptors(pc.FeatureExtractorType.SIFT, ft.descriptors))


def seed_reconstruction(seed, prev, camera, feats: Sequence[Features], seed_ids: dict) -> None:
    """Fill the empty ``pycolmap.Reconstruction`` ``seed`` with the part of the previous window's model
    ``prev`` that the new window shares: the shared anchors (``seed_ids``: new position k -> image id in
    ``prev``) as images k + 1 with their poses and keypoints (the same cached features, so point2D indices
    carry over), and every 3D point of ``prev`` observed by >= 2 of them (track re-numbered, other
    observations dropped). COLMAP's incremental pipeline then continues this model (``begin_reconstruction``
    of a non-empty model: registration of the remaining images, triangulation, bundle adjustment)."""
    import pycolmap as pc

    seed.add_camera_with_trivial_rig(camera)
    new_id = {}
    for k, old in seed_ids.items():
        im_prev = prev.image(old)
        im = pc.Image(name=im_prev.name, keypoints=feats[k].xy, camera_id=1, image_id=k + 1)
        seed.add_image_with_trivial_frame(im, im_prev.cam_from_world())
        new_id[old] = k + 1
    for p in prev.points3D.values():
        els = [pc.TrackElement(new_id[e.image_id], e.point2D_idx) for e in p.track.elements if e.image_id in new_id]
        if len(els) >= 2:
            seed.add_point3D(p.xyz, pc.Track(els), p.color)
