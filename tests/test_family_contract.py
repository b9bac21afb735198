"""Every family runs the shared contract (tests/family_contract.py): one class each."""

from __future__ import annotations

from family_contract import FamilyContract


class TestSegmentAnything(FamilyContract):
    family, package = "segment-anything", "segment_anything"
    predictor_path, model_builder = "segment_anything:SamPredictor", "samgpu_shim.tools.models:build_sam"


class TestSamHQ(FamilyContract):
    family, package = "segment-anything-hq", "segment_anything_hq"
    predictor_path, model_builder = "segment_anything_hq:SamPredictor", "family_models:tiny_sam_hq"


class TestMobileSam(FamilyContract):
    family, package = "mobile-sam", "mobile_sam"
    predictor_path, model_builder = "mobile_sam:SamPredictor", "family_models:mobile_sam_vit_t"


class TestMobileSamLite(FamilyContract):
    family, package = "mobilesam-lite", "mobilesam_lite"
    predictor_path, model_builder = "mobilesam_lite.mobile_sam:SamPredictor", "family_models:mobilesam_lite_vit_t"


class TestEfficientVitSam(FamilyContract):
    family, package = "efficientvit-sam", "efficientsam"
    predictor_path = "efficientsam.models.efficientvit.sam:EfficientViTSamPredictor"
    model_builder = "family_models:efficientvit_sam_l0"


class TestSam2(FamilyContract):
    family, package = "sam2", "sam2"
    predictor_path, model_builder = "sam2.sam2_image_predictor:SAM2ImagePredictor", "family_models:tiny_sam2"


class TestSam3(FamilyContract):
    family, package = "sam3", "sam3"
    predictor_path = "sam3.model.sam1_task_predictor:SAM3InteractiveImagePredictor"
    model_builder = "family_models:tiny_sam3"

    @classmethod
    def new_predictor(cls):
        import family_models

        return family_models.sam3_predictor()
