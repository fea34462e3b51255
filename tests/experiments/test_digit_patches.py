"""experiments.digit_patches --run: a trained run's feature network scored on one crop per test digit."""
import numpy as np

from attention_sampling.application.data import ImageFolder, stratified_split
from attention_sampling.application.megapixel_mnist import build
from attention_sampling.application.settings import TRAINING_DEFAULTS
from attention_sampling.application.trainer import Trainer
from experiments import digit_patches
from tests.application.test_megapixel_mnist import fake_digits


def test_a_runs_feature_network_is_scored_on_the_test_canvases_digits_label_and_others_apart(tmp_path, capsys):
    root = str(tmp_path / "set")
    build(root, height=120, width=140, n_noise=4, n_per_class=6, test_fraction=0.34, val_fraction=0.34, seed=0,
          source=fake_digits())
    dataset = ImageFolder.scan(root)
    config = dict(TRAINING_DEFAULTS, data=root, classes=dataset.classes, image_shape=[120, 140], epochs=1,
                  patches=3, size=28, scale=8, replicas=2, batch_size=4, seed=0, augment=False,
                  val_fraction=0.34, test_fraction=0.34)
    Trainer(dataset, str(tmp_path / "run"), config, log=lambda line: None, progress=False).fit()
    digit_patches.main([root, "--run", str(tmp_path / "run"), "--size", "28", "--test-fraction", "0.34",
                        "--val-fraction", "0.34"])
    lines = capsys.readouterr().out.strip().splitlines()
    n_test = len(stratified_split(np.array(dataset.labels), 0.34, 0, 0.34).test)
    assert [line.split(": ")[1].split(",")[0] for line in lines] == ["the label's digits", "the other digits"]
    assert [int(line.split(", ")[1].split()[0]) for line in lines] == [3 * n_test, 2 * n_test]
    assert all(0 <= float(line.rsplit(" ", 1)[1]) <= 1 for line in lines)
