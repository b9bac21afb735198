"""The upstream signatures the patch expects, as plain data.

A target is wrapped only when the function found there has exactly these
parameters; the audit reads the keywords from here too. No torch here.
"""

SAM1_PREDICT = ("self", "point_coords", "point_labels", "box", "mask_input", "multimask_output", "return_logits")
SAM1_EMBED_POINTS = ("self", "points", "labels", "pad")
SAM1_PREDICT_TORCH = (
    "self", "point_coords", "point_labels", "boxes", "mask_input", "multimask_output", "return_logits"
)
SAM1_SET_IMAGE = ("self", "image", "image_format")
SAM1_SET_TORCH_IMAGE = ("self", "transformed_image", "original_image_size")
SAM1_GET_REL_POS = ("q_size", "k_size", "rel_pos")
SAM1_ATTENTION_FORWARD = ("self", "x")

SAM_HQ_PREDICT = SAM1_PREDICT + ("hq_token_only",)
SAM_HQ_DECODER = (
    "self",
    "image_embeddings",
    "image_pe",
    "sparse_prompt_embeddings",
    "dense_prompt_embeddings",
    "multimask_output",
    "hq_token_only",
    "interm_embeddings",
)

SAM2_PREDICT = SAM1_PREDICT + ("normalize_coords",)
SAM2_PREDICT_BATCH = (
    "self",
    "point_coords_batch",
    "point_labels_batch",
    "box_batch",
    "mask_input_batch",
    "multimask_output",
    "return_logits",
    "normalize_coords",
)
SAM2_SET_IMAGE = ("self", "image")
SAM2_SET_IMAGE_BATCH = ("self", "image_list")
# The private method SAM 2's GPU path calls, checked before patching too.
SAM2_PRIVATE_PREDICT = (
    "self",
    "point_coords",
    "point_labels",
    "boxes",
    "mask_input",
    "multimask_output",
    "return_logits",
    "img_idx",
)

# Every patched public method name, and every keyword those methods take.
PATCHED_METHODS = ("predict", "predict_batch")
PREDICT_KEYWORDS = tuple(sorted(set(SAM_HQ_PREDICT + SAM2_PREDICT + SAM2_PREDICT_BATCH) - {"self"}))
