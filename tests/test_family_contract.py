"""Every family runs the shared contract (tests/family_contract.py)."""

from __future__ import annotations

import importlib

from family_contract import FamilyContract


def _cls(module: str, name: str):
    return getattr(importlib.import_module(module), name)


class TestSegmentAnything(FamilyContract):
    family = "segment-anything"
    package = "segment_anything"

    @classmethod
    def predictor_class(cls):
        return _cls("segment_anything", "SamPredictor")

    @classmethod
    def build_model(cls):
        from samgpu_shim.tools.models import build_sam

        return build_sam("tiny", seed=0)


class TestSamHQ(FamilyContract):
    family = "segment-anything-hq"
    package = "segment_anything_hq"

    @classmethod
    def predictor_class(cls):
        return _cls("segment_anything_hq", "SamPredictor")

    @classmethod
    def build_model(cls):
        import family_models

        return family_models.tiny_sam_hq()


class TestMobileSam(FamilyContract):
    family = "mobile-sam"
    package = "mobile_sam"

    @classmethod
    def predictor_class(cls):
        return _cls("mobile_sam", "SamPredictor")

    @classmethod
    def build_model(cls):
        import family_models

        return family_models.mobile_sam_vit_t()


class TestMobileSamLite(FamilyContract):
    family = "mobilesam-lite"
    package = "mobilesam_lite"

    @classmethod
    def predictor_class(cls):
        return _cls("mobilesam_lite.mobile_sam", "SamPredictor")

    @classmethod
    def build_model(cls):
        import family_models

        return family_models.mobilesam_lite_vit_t()


class TestEfficientVitSam(FamilyContract):
    family = "efficientvit-sam"
    package = "efficientsam"

    @classmethod
    def predictor_class(cls):
        return _cls("efficientsam.models.efficientvit.sam", "EfficientViTSamPredictor")

    @classmethod
    def build_model(cls):
        import family_models

        return family_models.efficientvit_sam_l0()


class TestSam2(FamilyContract):
    family = "sam2"
    package = "sam2"

    @classmethod
    def predictor_class(cls):
        return _cls("sam2.sam2_image_predictor", "SAM2ImagePredictor")

    @classmethod
    def build_model(cls):
        import family_models

        return family_models.tiny_sam2()
