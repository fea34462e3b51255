"""One image's prediction as a GeoJSON FeatureCollection that QuPath imports (File > Import objects).

Coordinates are level-0 pixels, x to the right and y down, as QuPath places them on the slide. Each
feature carries QuPath's properties: "objectType" ("detection" for what the model drew or looked at,
"annotation" for the tissue outline), "name", "classification" {"name", "color": [r, g, b]} and
"measurements" (a flat dict of numbers, shown in QuPath's measurement table).
"""
import json

import numpy as np

from ..patches import patch_boxes
from .errors import AttentionSamplingError
from .runfolder import write_text

PATCH_COLOR = [255, 0, 200]
ATTENTION_COLOR = [255, 160, 0]
TISSUE_COLOR = [0, 160, 80]
MASS = 0.5         # by default the most attended cells holding half the attention are written,
MAX_CELLS = 2000   # and no more than these: a slide's near-flat map would otherwise be 10^5 squares


def rectangle(top, left, bottom, right):
    """A closed ring of the box, counter-clockwise in the numbers' own axes as GeoJSON (RFC 7946) asks."""
    top, left, bottom, right = (float(v) for v in (top, left, bottom, right))
    return [[[left, top], [right, top], [right, bottom], [left, bottom], [left, top]]]


def feature(geometry, object_type, name, class_name, color, measurements):
    return {"type": "Feature", "geometry": geometry,
            "properties": {"objectType": object_type, "name": name,
                           "classification": {"name": class_name, "color": color},
                           "measurements": {key: float(value) for key, value in measurements.items()}}}


def cell_outline(mask, scale):
    """(h, w) bool cell mask -> a GeoJSON (Multi)Polygon of the union of its cells, in level-0 pixels."""
    import shapely
    from shapely.geometry import box, mapping

    rows, columns = np.nonzero(mask)
    union = shapely.union_all([box(c * scale, r * scale, (c + 1) * scale, (r + 1) * scale)
                               for r, c in zip(rows, columns)])
    return json.loads(json.dumps(mapping(shapely.geometry.polygon.orient(union) if union.geom_type == "Polygon"
                                         else union)))


def prediction_features(explanation, classes, scale, patch_size, image_shape, border="zero", look_probabilities=None,
                        threshold=None, tissue=None):
    """One image's explanation -> FeatureCollection dict.

    explanation: attention (h, w), cells (P, 2), weights (P,) of the first look, probabilities (C,), and
    optionally look_cells (K, P, 2), look_weights (K, P) of every look, whose patches are then all written;
    look_probabilities (K, C) each look's own, carried by that look's patches; image_shape (H, W) level 0;
    threshold: the attention cells at or above it are written (default: the top cells holding MASS
    of the attention, at most MAX_CELLS);
    tissue: an optional (h, w) bool cell mask whose outline is written as an annotation.
    """
    attention = np.asarray(explanation["attention"], dtype=np.float64)
    probabilities = np.asarray(explanation["probabilities"], dtype=np.float64)
    look_cells = np.asarray(explanation.get("look_cells", np.asarray(explanation["cells"])[None]))
    look_weights = np.asarray(explanation.get("look_weights", np.asarray(explanation["weights"])[None]),
                              dtype=np.float64)
    per_look = np.asarray(look_probabilities if look_probabilities is not None else probabilities[None],
                          dtype=np.float64)
    predicted = classes[int(probabilities.argmax())]
    features = []
    for j, (cells, weights) in enumerate(zip(look_cells, look_weights)):
        features += look_features(j, cells, weights, per_look[j], attention, classes, predicted, scale, patch_size,
                                  image_shape, border, len(look_cells) > 1)
    if threshold is None:
        ordered = np.sort(attention.ravel())[::-1]
        count = min(int(np.searchsorted(np.cumsum(ordered), MASS * ordered.sum())) + 1, MAX_CELLS, ordered.size)
        threshold = ordered[count - 1]
    for r, c in zip(*np.nonzero(attention >= threshold)):
        features.append(feature({"type": "Polygon", "coordinates": rectangle(r * scale, c * scale, (r + 1) * scale,
                                                                              (c + 1) * scale)},
                                "detection", f"attention cell {r},{c}", "attention", ATTENTION_COLOR,
                                {"attention": attention[r, c], "row": r, "column": c}))
    if tissue is not None:
        tissue = np.asarray(tissue, dtype=bool)
        if tissue.shape != attention.shape:
            raise ValueError(f"tissue mask {tissue.shape} does not match the attention map {attention.shape}")
        if tissue.any():
            features.append(feature(cell_outline(tissue, scale), "annotation", "tissue", "tissue", TISSUE_COLOR,
                                    {"cells": int(tissue.sum())}))
    return {"type": "FeatureCollection", "features": features}


def look_features(j, cells, weights, probabilities, attention, classes, predicted, scale, patch_size, image_shape,
                  border, named_by_look):
    """Look j's (P, 2) cells, (P,) weights and (C,) probabilities -> its P patch features."""
    features = []
    boxes = patch_boxes(cells, patch_size, scale, tuple(image_shape), border)
    for k, (top, left, bottom, right) in enumerate(boxes):
        measurements = {"attention weight": weights[k], "look": j, "patch": k + 1,
                        "attention": attention[tuple(cells[k])],
                        **{f"probability {name}": p for name, p in zip(classes, probabilities)}}
        # One look keeps the short name; with several, QuPath's list tells the looks apart by name.
        name = f"patch {k + 1} look {j}" if named_by_look else f"patch {k + 1}"
        features.append(feature({"type": "Polygon", "coordinates": rectangle(top, left, bottom, right)},
                                "detection", name, predicted, PATCH_COLOR, measurements))
    return features


def write_atomic(path, text):
    """runfolder.write_text (a reader never sees half a file), its failure a one-line error naming the file."""
    try:
        write_text(path, text)
    except OSError as error:
        raise AttentionSamplingError(f"{path}: {error.strerror or error}") from None


def write_geojson(path, collection):
    write_atomic(path, json.dumps(collection))
