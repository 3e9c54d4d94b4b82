"""LLaVA's conversation record format, shared by the dataset converters and the EntityGrid writer."""

from __future__ import annotations

from typing import Any

IMAGE_TAG = "<image>"


def llava_record(image: str, question: str, answer: str, rid: str) -> dict[str, Any]:
    """One image, one human turn (``<image>`` then the question), one answer turn."""
    return {"id": rid, "image": image, "conversations": [
        {"from": "human", "value": f"{IMAGE_TAG}\n{question}"}, {"from": "gpt", "value": answer}]}
