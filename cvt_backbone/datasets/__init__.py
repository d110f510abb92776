from .shapes import CLASSES, PALETTE, make_classification_set, make_scene_set, render_scene

__all__ = ['CLASSES', 'PALETTE', 'make_classification_set', 'make_scene_set', 'render_scene']
