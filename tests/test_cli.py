"""The headless CLI: train, evaluate, argument validation, clear errors."""

import json

import pytest

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
