"""A medical volume tool: one slice at a time, saved with SimpleITK and nibabel."""

import nibabel as nib
import numpy as np
import SimpleITK as sitk


def segment_slice(predictor, slice_rgb, box):
    predictor.set_image(slice_rgb)
    masks, scores, _ = predictor.predict(box=box, multimask_output=False)
    return masks[0]


def segment_volume(predictor, volume, boxes):
    out = np.zeros(volume.shape, dtype=np.uint8)
    for z in range(volume.shape[0]):
        rgb = np.repeat(volume[z][..., None], 3, axis=-1)
        mask = segment_slice(predictor, rgb, boxes[z])
        out[z] = mask  # numpy's item assignment converts the tensor  # expect: ndarray[i] = mask
    return out


def save(predictor, volume, boxes, affine, path):
    labels = np.stack([segment_slice(predictor, volume[z], b) for z, b in enumerate(boxes)])  # expect: np.stack()
    image = sitk.GetImageFromArray(labels.astype(np.uint8))
    sitk.WriteImage(image, path)
    single = segment_slice(predictor, volume[0], boxes[0])
    nib.save(nib.Nifti1Image(single, affine), path + ".nii.gz")  # expect: nib.Nifti1Image()
