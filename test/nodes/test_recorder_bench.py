"""``ceed-vla bench-recorder``: settings are checked, and one short run over DDS reports frames that are on disk."""

from __future__ import annotations

import json

import pytest

from ceed_vla_ros.tools.recorder_bench import parse_setting, table


def test_settings_parse_and_bad_ones_are_refused():
    assert parse_setting("video:480:30") == {"name": "video:480:30", "image_storage": "video", "image_size": 480,
                                             "fps": 30}
    assert parse_setting("image:64")["fps"] == 10
    for bad in ("png:64", "image", "image:4", "image:64:0", "image:x"):
        with pytest.raises(ValueError):
            parse_setting(bad)


def test_one_short_run_reports_what_is_on_disk(tmp_path):
    from ceed_vla_ros.tools import cli

    out = tmp_path / "report"
    assert cli.main(["bench-recorder", "--settings", "video:32", "--episodes", "1", "--episode-s", "2",
                     "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "results.json").read_text())["results"][0]
    # frames read back from the dataset == frames the recorder said it saved; ticks add up
    assert result["frames_written"] == result["frames_reported"] > 0
    assert result["frames_written"] + result["ticks_dropped"] <= result["ticks_due"] + 5  # + the stop call's latency
    assert result["kib_per_frame"] > 0 and result["write_ms_per_frame"] > 0
    assert table([result]).splitlines()[2].startswith("| video:32:10 |")
    assert "video:32:10" in (out / "results.md").read_text()
