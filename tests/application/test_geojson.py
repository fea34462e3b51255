"""geojson.py: features QuPath imports, valid for a real GeoJSON library, in level-0 pixels."""
import json

import geojson
import numpy as np
import pytest
import shapely.geometry

from attention_sampling.application.geojson import prediction_features, write_geojson


def explanation():
    attention = np.full((4, 5), 0.01)
    attention[1, 2] = 1 - 0.01 * 19
    return {"attention": attention, "cells": np.array([[1, 2], [0, 0], [3, 4]]),
            "weights": np.array([0.5, 0.3, 0.2]), "probabilities": np.array([0.2, 0.8])}


def test_patches_and_attention_cells_are_valid_qupath_features(tmp_path):
    collection = prediction_features(explanation(), ["a<b", "c"], scale=8, patch_size=12, image_shape=(32, 40),
                                     look_probabilities=np.array([[0.25, 0.75], [0.15, 0.85]]))
    path = tmp_path / "x.geojson"
    write_geojson(str(path), collection)
    loaded = geojson.loads(path.read_text())
    assert loaded.is_valid and loaded["type"] == "FeatureCollection"
    patches = [f for f in loaded["features"] if f["properties"]["name"].startswith("patch")]
    cells = [f for f in loaded["features"] if f["properties"]["name"].startswith("attention")]
    assert len(patches) == 3 and len(cells) == 1  # the one cell holding half the attention
    for feature in loaded["features"]:
        properties = feature["properties"]
        assert properties["objectType"] == "detection" and set(properties["classification"]) == {"name", "color"}
        shape = shapely.geometry.shape(feature["geometry"])
        assert shape.is_valid and shape.exterior.is_ccw
    first = patches[0]["properties"]["measurements"]
    assert first["attention weight"] == 0.5 and first["look"] == 0 and first["probability c"] == 0.75
    assert patches[0]["properties"]["classification"]["name"] == "c"
    # Cell (1, 2) at scale 8, patch 12 centred on it: level-0 pixels x 14..26, y 6..18.
    assert shapely.geometry.shape(patches[0]["geometry"]).bounds == (14.0, 6.0, 26.0, 18.0)
    assert shapely.geometry.shape(cells[0]["geometry"]).bounds == (16.0, 8.0, 24.0, 16.0)


def test_a_tissue_mask_is_written_as_its_outline_with_the_hole():
    mask = np.zeros((4, 5), bool)
    mask[0:3, 0:3] = True
    mask[1, 1] = False  # a hole
    mask[3, 4] = True   # an island apart
    collection = prediction_features(explanation(), ["a", "c"], 8, 12, (32, 40), tissue=mask)
    tissue, = [f for f in collection["features"] if f["properties"]["objectType"] == "annotation"]
    shape = shapely.geometry.shape(json.loads(json.dumps(tissue["geometry"])))
    assert shape.is_valid and shape.geom_type == "MultiPolygon"
    assert shape.area == 9 * 64  # 8 + 1 cells of 8 x 8 pixels
    assert geojson.loads(json.dumps(collection)).is_valid
    with pytest.raises(ValueError, match="tissue mask"):
        prediction_features(explanation(), ["a", "c"], 8, 12, (32, 40), tissue=mask[:2])


def test_every_look_is_written_with_its_index_and_its_own_probabilities():
    looks = {**explanation(), "look_cells": np.array([[[1, 2], [0, 0], [3, 4]], [[2, 2], [1, 2], [0, 1]]]),
             "look_weights": np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])}
    per_look = np.array([[0.25, 0.75], [0.15, 0.85]])
    collection = prediction_features(looks, ["a", "c"], 8, 12, (32, 40), look_probabilities=per_look)
    assert geojson.loads(json.dumps(collection)).is_valid
    patches = [f["properties"] for f in collection["features"] if f["properties"]["name"].startswith("patch")]
    assert [p["measurements"]["look"] for p in patches] == [0, 0, 0, 1, 1, 1]
    assert len({p["name"] for p in patches}) == 6
    for p in patches:
        j, k = int(p["measurements"]["look"]), int(p["measurements"]["patch"]) - 1
        assert p["measurements"]["probability c"] == per_look[j, 1]
        assert p["measurements"]["attention weight"] == looks["look_weights"][j, k]
    assert patches[4]["measurements"]["attention"] == explanation()["attention"][1, 2]
