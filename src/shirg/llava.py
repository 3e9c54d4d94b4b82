"""LLaVA's conversation record format, shared by the dataset converters and the EntityGrid writer."""

from __future__ import annotations

from typing import Any

IMAGE_TAG = "<image>"


def llava_record(image: str, question: str, answer: str, rid: str,
                 boxes: list[list[int]] | None = None) -> dict[str, Any]:
    """One image, one human turn (``<image>`` then the question), one answer turn. ``boxes``: the
    answer's evidence as [x0, y0, x1, y1] image pixels (an extra key LLaVA readers ignore; ``shirg
    train``'s box relevance target reads it)."""
    record = {"id": rid, "image": image, "conversations": [
        {"from": "human", "value": f"{IMAGE_TAG}\n{question}"}, {"from": "gpt", "value": answer}]}
    if boxes is not None:
        record["boxes"] = [list(b) for b in boxes]
    return record
