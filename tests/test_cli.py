"""The headless CLI: train, evaluate, argument validation, clear errors."""

import json

import pytest
import torch

from core.cli import build_parser, main


def test_train_then_evaluate_on_demo(tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["train", "--dataset", "mnist", "--head", "lgm", "--feat-dim", "2", "--epochs", "1",
                 "--subset", "256", "--demo", "--quiet", "--out", str(out)]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert (tmp_path / "m.json").is_file() and not (tmp_path / "m.state").exists()
    assert main(["evaluate", "--checkpoint", str(out), "--demo", "--limit", "200"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"accuracy", "n_test", "dataset", "head", "feat_dim"} <= set(result)
    assert result["n_test"] == 200 and result["head"] == "lgm" and result["feat_dim"] == 2
    assert 0.0 <= result["accuracy"] <= 1.0 and trained["checkpoint"] == str(out)


@pytest.mark.parametrize("argv", [
    ["train", "--dataset", "mnist", "--head", "lgm", "--epochs", "0", "--out", "x.pt"],
    ["train", "--dataset", "mnist", "--head", "lgm", "--lr", "nan", "--out", "x.pt"],
    ["train", "--dataset", "svhn", "--head", "lgm", "--out", "x.pt"],
    ["train", "--dataset", "mnist", "--head", "lgm", "--feat-dim", "abc", "--out", "x.pt"],
])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as err:
        build_parser().parse_args(argv)
    assert err.value.code == 2
    assert "error" in capsys.readouterr().err


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--demo"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "none.pt" in err and "Traceback" not in err


def test_missing_data_is_one_line(tmp_path, capsys, monkeypatch):
    import core.data as data_mod

    monkeypatch.setattr(data_mod, "_download", lambda n, r: None)
    code = main(["train", "--dataset", "cifar10", "--head", "softmax", "--data-dir", str(tmp_path),
                 "--out", str(tmp_path / "m.pt")])
    assert code == 1 and "could not load 'cifar10'" in capsys.readouterr().err


@pytest.mark.slow
def test_craft_and_attack_commands(tmp_path, capsys):
    ckpt = tmp_path / "m.pt"
    assert main(["train", "--dataset", "mnist", "--head", "softmax", "--feat-dim", "8", "--epochs", "1",
                 "--subset", "256", "--demo", "--quiet", "--out", str(ckpt)]) == 0
    capsys.readouterr()
    out = tmp_path / "p.npz"
    common = ["--checkpoint", str(ckpt), "--target-index", "0", "--base-class", "8", "--n-poisons", "2",
              "--iters", "10", "--demo", "--seed", "1"]
    assert main(["craft", *common, "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_poisons"] == 2 and out.is_file() and summary["iterations"] == 10
    assert max(summary["linf"]) <= 0.1 + 1e-6  # the MNIST clean-label budget by default
    assert len(summary["judge"]["clean_label"]) == 2  # the shipped judge looked at both poisons
    assert main(["attack", *common, "--attack", "bp", "--n-clean", "100", "--n-test", "50",
                 "--defences", "none", "knn"]) == 0
    printed = json.loads(capsys.readouterr().out)
    record = printed["outcomes"]["none"]
    assert {"success", "probs_before", "probs_after", "clean_acc_before", "clean_acc_after",
            "poison_l2", "poison_linf", "feature_distance"} <= set(record)
    assert record["base_label"] == 8 and record["n_clean"] == 100
    assert set(printed["trial"]["defences"]) == {"none", "knn"} and printed["trial"]["target_index"] == 0


@pytest.mark.parametrize("extra,msg", [
    (["--target-index", "999999"], "target-index must be in"),
    (["--target-index", "0", "--base-class", "4"], "must differ"),
])
def test_attack_argument_errors(tmp_path, capsys, extra, msg):
    ckpt = tmp_path / "m.pt"
    main(["train", "--dataset", "mnist", "--head", "softmax", "--feat-dim", "4", "--epochs", "1",
          "--subset", "64", "--demo", "--quiet", "--out", str(ckpt)])
    capsys.readouterr()
    args = ["craft", "--checkpoint", str(ckpt), "--demo", "--iters", "2", "--base-class", "8", *extra]
    assert main(args) == 1
    assert msg in capsys.readouterr().err


def test_train_suite_only_trains_the_models_named_and_skips_finished_ones(tmp_path, capsys):
    """`--only` lets a GPU train a suite's models side by side, one process each."""
    from tests.conftest import write_mnist_layout

    write_mnist_layout(tmp_path / "data")
    flags = ["train-suite", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "data" / "MNIST" / "raw"),
             "--epochs", "1", "--only", "softmax_d2", "--quiet", "--out", str(tmp_path / "o")]
    assert main(flags) == 0
    first = json.loads(capsys.readouterr().out)
    assert [m["checkpoint"] for m in first["models"]] == [str(tmp_path / "o" / "fashion_mnist_softmax_d2.pt")]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["fashion_mnist_softmax_d2.json",
                                                                  "fashion_mnist_softmax_d2.pt"]
    assert main(flags) == 0
    assert json.loads(capsys.readouterr().out)["models"][0]["skipped"] == "already trained"
    with pytest.raises(SystemExit) as err:
        build_parser().parse_args(["train-suite", "--dataset", "mnist", "--out", "x", "--only", "lgm_d3"])
    assert err.value.code == 2


def test_train_judge_writes_a_second_vgg_judge_beside_the_shipped_one(tmp_path):
    """``--arch vgg`` trains the deeper judge network into its own file; the ConvNet's name is untouched."""
    from core.checkpoints import load_checkpoint
    from core.models import VGGNet

    assert main(["train-judge", "--dataset", "cifar10", "--arch", "vgg", "--width", "8", "--epochs", "1",
                 "--demo", "--quiet", "--out", str(tmp_path)]) == 0
    assert not (tmp_path / "cifar10_judge.pt").exists()
    model, meta = load_checkpoint(tmp_path / "cifar10_judge_vgg8.pt")
    assert isinstance(model.extractor, VGGNet) and meta["config"]["width"] == 8 and meta["seed"] == 1235
    x = torch.rand(3, 3, 32, 32)
    assert model(x).shape == (3, 10) and model.features(x).shape == (3, 128)
