"""Scoring on a real Dask LocalCluster (worker processes): the rows of the in-process path, error rows for
unreadable images, and every image exactly once when a worker is killed mid-archive."""
import os
import signal

import imageio.v3 as iio
import numpy as np
import pytest

import nn
from attention_sampling.application.checkpoint import save_checkpoint
from attention_sampling.application.trainer import build_model

distributed = pytest.importorskip("distributed")
from attention_sampling.application.cluster import predict_on_cluster  # noqa: E402
from attention_sampling.application.prediction import predict_in_process  # noqa: E402

CONFIG = dict(classes=["a", "b"], image_shape=[40, 52], size=12, scale=4, patches=4, seed=0, estimator="reinforce",
              sampling="with", temperature=3.0, border="reflect", floor=0.0)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A checkpoint of an (untrained) model and 12 small images, two of them of another size, one unreadable."""
    folder = tmp_path_factory.mktemp("archive")
    checkpoint = str(folder / "best.npz")
    save_checkpoint(checkpoint, build_model(CONFIG), nn.Adam(), np.random.default_rng(0), epoch=1, config=CONFIG,
                    history=[])
    rng = np.random.default_rng(1)
    paths = []
    for index in range(11):
        shape = (40, 52, 3) if index % 5 else (60, 70, 3)
        path = str(folder / f"image{index:02d}.png")
        iio.imwrite(path, (rng.random(shape) * 255).astype(np.uint8))
        paths.append(path)
    broken = str(folder / "broken.png")
    with open(broken, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n cut short")
    paths.insert(5, broken)
    return checkpoint, paths


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       silence_logs=40)
    with distributed.Client(cluster) as connected:
        yield connected
    cluster.close()


def test_the_cluster_gives_the_in_process_rows_in_order_with_error_rows(archive, client):
    checkpoint, paths = archive
    expected = list(predict_in_process(checkpoint, paths, seed=3, looks=2))
    rows = list(predict_on_cluster(client, checkpoint, paths, seed=3, looks=2, in_flight=3))
    assert rows == expected
    assert [row["path"] for row in rows] == paths
    assert "error" in rows[5] and "broken.png" in rows[5]["error"]
    assert all("error" not in row for index, row in enumerate(rows) if index != 5)


def test_the_cluster_writes_the_in_process_geojson_and_report_rows(archive, client, tmp_path):
    checkpoint, paths = archive
    local, remote = tmp_path / "local", tmp_path / "remote"
    for folder in (local, remote):
        (folder / "report" / "images").mkdir(parents=True)
        (folder / "geojson").mkdir()
    expected = list(predict_in_process(checkpoint, paths, 3, 1, None, geojson=str(local / "geojson"),
                                       report=str(local / "report")))
    rows = list(predict_on_cluster(client, checkpoint, paths, seed=3, geojson=str(remote / "geojson"),
                                   report=str(remote / "report")))
    assert rows == expected and "report" in rows[0]
    names = sorted(os.listdir(local / "geojson"))
    assert len(names) == 11 and names == sorted(os.listdir(remote / "geojson"))
    for name in names:
        assert (local / "geojson" / name).read_text() == (remote / "geojson" / name).read_text()


def test_a_killed_worker_loses_no_image(archive, client):
    """One worker is killed (SIGKILL) after the first row arrives: its tasks run again on the other worker
    or on its restarted replacement, and every image appears exactly once, with the in-process numbers."""
    checkpoint, paths = archive
    expected = list(predict_in_process(checkpoint, paths, seed=0))
    pids = list(client.run(os.getpid).values())
    rows = []
    for row in predict_on_cluster(client, checkpoint, paths, seed=0, in_flight=len(paths)):
        if not rows:
            os.kill(pids[0], signal.SIGKILL)
        rows.append(row)
    assert [row["path"] for row in rows] == paths
    assert rows == expected
