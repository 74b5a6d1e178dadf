"""`dynamics render` argument handling and its progress bar (the full run is in integration)."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli.render import (
    ProgressBar,
    build_parser,
    default_weights_dir,
    main,
    options_from_args,
    render_config,
)
from services.gateway.domain import AnimationOptions, ProgressUpdate, option_fields
from tests.unit.common.unreadable import unprivileged_prefix

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "me.png").write_bytes(b"photo")
    (tmp_path / "hero.mp4").write_bytes(b"video")
    return str(tmp_path / "me.png"), str(tmp_path / "hero.mp4")


def test_weights_default_and_missing_weights(tmp_path: Path, inputs, capsys) -> None:
    assert default_weights_dir({}) == Path(".dynamics/weights")
    assert default_weights_dir({"DYNAMICS_WEIGHTS_DIR": "/w"}) == Path("/w")
    code = main(
        [*inputs, "-o", str(tmp_path / "o.mp4"), "--weights", str(tmp_path / "none")], environ={}
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"dynamics render: weights folder {tmp_path / 'none'}: no such file")


@pytest.mark.parametrize(("which", "label"), [(0, "source"), (1, "hero video")])
def test_missing_source_or_hero_is_one_line_before_anything_starts(
    tmp_path: Path, inputs, capsys, which: int, label: str
) -> None:
    args = list(inputs)
    args[which] = str(tmp_path / "gone.bin")
    code = main([*args, "-o", str(tmp_path / "o.mp4"), "--weights", str(tmp_path)], environ={})
    assert code == 2
    assert capsys.readouterr().err == (
        f"dynamics render: {label} {tmp_path / 'gone.bin'}: no such file or folder\n"
    )


@pytest.mark.parametrize(
    ("output", "reason"), [("out", "is a folder, not a file"), ("file/o.mp4", "not a folder")]
)
def test_unwritable_output_is_one_line_before_anything_starts(
    tmp_path: Path, inputs, capsys, output: str, reason: str
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "file").write_bytes(b"x")
    code = main([*inputs, "-o", str(tmp_path / output), "--weights", str(tmp_path)], environ={})
    assert code == 2
    assert capsys.readouterr().err == f"dynamics render: output {tmp_path / output}: {reason}\n"
    assert not list((tmp_path / "out").iterdir())  # the write probe leaves nothing behind


def test_unreadable_source_and_weights_folder(tmp_path: Path, inputs) -> None:
    """Mode-000 files and folders, really refused (as root too), through the real command."""
    locked = tmp_path / "locked.png"
    locked.write_bytes(b"photo")
    locked.chmod(0)
    closed = tmp_path / "weights"
    closed.mkdir()
    closed.chmod(0)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                *unprivileged_prefix(),
                sys.executable,
                "-m",
                "services.cli",
                "render",
                *args,
                "-o",
                str(tmp_path / "o.mp4"),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
            check=False,
        )

    try:
        photo = run(str(locked), inputs[1], "--weights", str(tmp_path))
        weights = run(*inputs, "--weights", str(closed))
    finally:
        closed.chmod(0o700)
    assert photo.returncode == 2
    assert photo.stderr == f"dynamics render: source {locked}: permission denied\n"
    assert weights.returncode == 2 and len(weights.stderr.splitlines()) == 1
    assert weights.stderr.startswith(f"dynamics render: weights folder {closed}: permission denied")


def test_a_flag_for_every_option_with_the_models_choices() -> None:
    actions = {a.dest: a for a in build_parser()._actions}
    for field in option_fields():
        action = actions[field.name]
        assert action.option_strings[0] == "--" + field.name.replace("_", "-")
        assert action.default is None and field.description in action.help
        if field.kind is bool:
            assert isinstance(action, argparse.BooleanOptionalAction)
        elif field.choices:
            assert tuple(action.choices) == field.choices
        else:
            assert field.bounds() in action.help


def test_flags_become_typed_options() -> None:
    args = build_parser().parse_args(
        [
            "a.png",
            "b.mp4",
            "-o",
            "o.mp4",
            "--no-relative-motion",
            "--driving-multiplier",
            "2.5",
            "--region",
            "lip",
            "--lip-retargeting",
            "--no-paste-back",
            "--driving-option",
            "pose-friendly",
        ]
    )
    assert options_from_args(args) == AnimationOptions(
        relative_motion=False,
        driving_multiplier=2.5,
        region="lip",
        lip_retargeting=True,
        paste_back=False,
        driving_option="pose-friendly",
    )
    plain = build_parser().parse_args(["a.png", "b.mp4", "-o", "o.mp4"])
    assert options_from_args(plain) == AnimationOptions()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--driving-multiplier", "0"], "--driving-multiplier: Input should be greater than 0"),
        (
            ["--driving-multiplier", "11"],
            "--driving-multiplier: Input should be less than or equal",
        ),
        (["--driving-multiplier", "nan"], "--driving-multiplier: Input should be a finite number"),
        (["--region", "nose"], "invalid choice: 'nose'"),
        (["--crf", "0"], "'0' is not an x264 CRF (1-51)"),
        (["--preset", "warp"], "invalid choice: 'warp'"),
        (["--option", "region=lip"], "unrecognized arguments: --option"),
    ],
)
def test_bad_flags_are_usage_errors(tmp_path: Path, inputs, capsys, argv, message) -> None:
    with pytest.raises(SystemExit) as info:
        main([*inputs, "-o", "o.mp4", "--weights", str(tmp_path), *argv], environ={})
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_run_flags_reach_the_orchestrator_config() -> None:
    args = build_parser().parse_args(
        [
            "a.png",
            "b.mp4",
            "-o",
            "o.mp4",
            "--sequential",
            "--crop-driving-video",
            "--crf",
            "20",
            "--preset",
            "medium",
        ]
    )
    config = render_config(args)
    assert (
        config.sequential,
        config.crop_driving_video,
        config.encoder_crf,
        config.encoder_preset,
    ) == (True, True, 20, "medium")
    plain = render_config(build_parser().parse_args(["a.png", "b.mp4", "-o", "o.mp4"]))
    assert (
        plain.sequential,
        plain.crop_driving_video,
        plain.encoder_crf,
        plain.encoder_preset,
    ) == (False, False, 0, "")


def test_progress_bar_plain_lines() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, width=10)
    bar(ProgressUpdate("detect", 0, 10, None, {}))
    bar(ProgressUpdate("animate", 5, 10, 2.5, {}))
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("detect") and "ETA --" in lines[0]
    assert "[#####.....] 5/10 frames  ETA   2.5s" in lines[1]
