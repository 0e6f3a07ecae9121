"""The `keras-topo` flags of TopoLM's neighbourhood sampling (`--neighbourhoods`, `--radius`)."""

import pytest

from keras_topo import Topography, cli

TINY = ["--dataset", "digits", "--epochs", "1", "--verbose", "0"]


def test_neighbourhood_flags_reach_the_topography():
    flags = ["--objective", "spatial", "--neighbourhoods", "5", "--radius", "0.3"]
    args = cli._parser().parse_args(["train", *TINY, "--topography", "grid", *flags, "--out", "x"])
    expected = Topography("grid", objective="spatial", neighbourhoods=5, radius=0.3)
    assert cli._run_config(args, "x").topography == expected
    sweep = cli._parser().parse_args(["sweep", *TINY, *flags, "--runs-dir", "r"])
    assert cli._run_config(sweep, "r").topography == expected
    plain = cli._parser().parse_args(["train", *TINY, "--topography", "grid", "--out", "x"])
    assert cli._run_config(plain, "x").topography.neighbourhoods is None  # all pairs


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--neighbourhoods", "5", "--radius", "0.3"], 'pairs of the "spatial" objective'),
        (["--objective", "spatial", "--neighbourhoods", "5"], "radius must be a positive"),
        (["--objective", "spatial", "--radius", "0.3"], "give neighbourhoods=K"),
    ],
)
def test_inconsistent_neighbourhood_flags_exit_with_the_reason(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", *TINY, "--topography", "grid", *flags, "--out", "x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "keras-topo train: error:" in err
    assert message in err, err
