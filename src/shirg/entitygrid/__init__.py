"""EntityGrid: a generated, openly specified high-resolution recognition benchmark (docs/entitygrid.md).

Used by evaluation (loading and scoring its questions) and by training (its LLaVA records and
per-patch labels); it imports neither. Public API: :func:`generate`, :func:`generate_sample`,
:class:`EntityGridConfig`, :func:`preset_config`, :func:`training_records` and the vocabulary
(``COLOURS``, ``SHAPES``, ``TYPES``).
"""

from shirg.entitygrid.scenes import (
    CAPTION_QUESTION,
    COLOURS,
    LABEL_PLACES,
    LLAVA_FILE,
    META_FILE,
    PRESETS,
    QUESTIONS_FILE,
    SHAPES,
    TYPES,
    VERSION,
    Entity,
    EntityGridConfig,
    cell_question,
    check_types,
    describe_cell,
    describe_scene,
    draw_shape,
    generate,
    generate_sample,
    label_font,
    make_question,
    parse_grid,
    preset_config,
    render_scene,
    sample_id,
    training_records,
)

__all__ = [
    "CAPTION_QUESTION", "COLOURS", "LABEL_PLACES", "LLAVA_FILE", "META_FILE", "PRESETS", "QUESTIONS_FILE", "SHAPES",
    "TYPES", "VERSION", "Entity", "EntityGridConfig", "cell_question", "check_types", "describe_cell",
    "describe_scene", "draw_shape", "generate", "generate_sample", "label_font", "make_question", "parse_grid",
    "preset_config", "render_scene", "sample_id", "training_records",
]
